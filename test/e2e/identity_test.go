package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest"
	"banger/internal/sshkeys"
)

// A systemd guest applies a new identity through the agent's reidentify
// op, as a VM restored from a snapshot will: a new MAC and address on
// eth0 (which banger's anti-spoofing cuts off, as it is not the VM's
// lease), a new hostname, machine-id and SSH host key, and sshd reloaded
// to serve that key; back on its lease the host reaches it with the new
// key pinned. The
// daemon's own agent connection is not used: the daemon route that sends
// reidentify after a restore is not there yet, and a virtio-serial port
// takes one host. So the test runs the same agent code (agent.Server) a
// second time in the guest on the stdio of `vm exec` and speaks to it with
// the guest client.
func TestReidentifySystemdGuest(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "id1")
	oldIP := e.inspect("id1").IP
	// The guest's network as banger configured it at boot.
	addr := strings.Fields(e.ok("vm", "exec", "id1", "--", "sh", "-c", "ip -4 -o addr show dev eth0 | awk '{print $4}'"))
	route := strings.Fields(e.ok("vm", "exec", "id1", "--", "ip", "route", "show", "default"))
	if len(addr) != 1 || len(route) < 3 {
		t.Fatalf("guest network: addr %q, route %q", addr, route)
	}
	prefix := netip.MustParsePrefix(addr[0])
	oldMAC := strings.TrimSpace(e.ok("vm", "exec", "id1", "--", "cat", "/sys/class/net/eth0/address"))
	newAddr := netip.PrefixFrom(prefix.Addr().Next().Next().Next(), prefix.Bits()) // not one banger gave out
	gw := route[2]

	t.Logf("/etc/machine-id before: %s", e.ok("vm", "exec", "id1", "--", "sh", "-c",
		"findmnt -n -o SOURCE,FSTYPE /etc/machine-id || echo 'not a mount point'; ls -l /var/lib/dbus/machine-id 2>&1 || true"))
	// vm create waits for the agent; sshd may still be starting.
	var sshdBefore string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		sshdBefore = e.ok("vm", "exec", "id1", "--", "systemctl", "show", "-p", "ActiveState,MainPID", "ssh.service")
		if strings.Contains(sshdBefore, "ActiveState=active") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh.service not active a minute after vm create:\n%s", sshdBefore)
		}
	}
	helper := buildHelper(t)
	e.ok("vm", "cp", helper, "id1:/root/agentstdio")
	keyFile := filepath.Join(t.TempDir(), "stdio.key")
	stdioKey := randomBytes(t, guest.KeySize)
	os.WriteFile(keyFile, []byte(hex.EncodeToString(stdioKey)+"\n"), 0o600)
	e.ok("vm", "cp", keyFile, "id1:/root/stdio.key")

	c := e.stdioAgent(t, "id1", stdioKey)
	host, err := sshkeys.Generate("root@id1-fork")
	if err != nil {
		t.Fatal(err)
	}
	req := guest.ReidentifyRequest{
		Time: time.Now(), Hostname: "id1-fork", MAC: "02:42:0a:11:22:33",
		Address: newAddr.String(), Gateway: gw, DNS: []string{gw},
		MachineID: hex.EncodeToString(randomBytes(t, 16)),
		HostKey:   string(host.Private), HostKeyPub: host.Public,
		AgentKey: hex.EncodeToString(randomBytes(t, guest.KeySize)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.Reidentify(ctx, req); err != nil {
		t.Fatalf("Reidentify: %v", err)
	}
	t.Logf("reidentify (sshd under systemd) took %v", time.Since(start))

	got := e.ok("vm", "exec", "id1", "--", "sh", "-c",
		"hostname; cat /etc/hostname /etc/machine-id /sys/class/net/eth0/address; ip -4 -o addr show dev eth0 | awk '{print $4}'; grep 127.0.1.1 /etc/hosts")
	want := "id1-fork\nid1-fork\n" + req.MachineID + "\n" + req.MAC + "\n" + newAddr.String() + "\n127.0.1.1\tid1-fork\n"
	if got != want {
		t.Errorf("guest identity:\n%s\nwant:\n%s", got, want)
	}
	// systemd saw a reload, not a crash: the unit is active, its main
	// process the same.
	if got := e.ok("vm", "exec", "id1", "--", "systemctl", "show", "-p", "ActiveState,MainPID", "ssh.service"); got != sshdBefore {
		t.Errorf("ssh.service after reidentify:\n%s\nbefore:\n%s", got, sshdBefore)
	}

	// banger's anti-spoofing lets a VM's tap carry only the VM's leased
	// MAC and address, so the guest's self-chosen identity is cut off
	// (a restored VM gets its own lease and tap before it reidentifies).
	known := filepath.Join(t.TempDir(), "known_hosts")
	sshTo := func(ip string) ([]byte, error) {
		os.WriteFile(known, []byte(ip+" "+host.Public+"\n"), 0o600)
		return exec.Command("ip", "netns", "exec", e.ns, "ssh", "-i", filepath.Join(e.home, "config", "ssh", "id_ed25519"),
			"-o", "UserKnownHostsFile="+known, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
			"-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@"+ip, "hostname").CombinedOutput()
	}
	if out, err := sshTo(newAddr.Addr().String()); err == nil {
		t.Errorf("a guest on an address banger did not lease it answered ssh:\n%s", out)
	}
	// Back to its lease, keeping the new host key: reachable from the host
	// side of the bridge, the new key pinned.
	req.Time, req.MAC, req.Address, req.AgentKey = time.Now(), oldMAC, prefix.String(), ""
	if err := c.Reidentify(ctx, req); err != nil {
		t.Fatalf("Reidentify back to the lease: %v", err)
	}
	if got := e.ok("vm", "exec", "id1", "--", "cat", "/sys/class/net/eth0/address"); got != oldMAC+"\n" {
		t.Errorf("eth0 MAC after the second reidentify: %q, want %s", got, oldMAC)
	}
	var out []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		if out, err = sshTo(oldIP); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || string(out) != "id1-fork\n" {
		t.Errorf("ssh to the leased address with the new host key pinned: %v\n%s", err, out)
	}
	// For comparison, in the same guest: what systemctl restart costs
	// (the agent reloads sshd with SIGHUP instead; its log has took.sshd).
	t.Logf("systemctl restart ssh.service in the guest: %s ms", strings.TrimSpace(e.ok("vm", "exec", "id1", "--", "sh", "-c",
		"a=$(date +%s%N); systemctl restart ssh.service; b=$(date +%s%N); echo $(( (b-a)/1000000 ))")))
}

// buildHelper builds test/e2e/testdata/agentstdio, static.
func buildHelper(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentstdio")
	cmd := exec.Command("go", "build", "-o", bin, "./test/e2e/testdata/agentstdio")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building agentstdio: %v\n%s", err, out)
	}
	return bin
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// stdioAgent runs agentstdio in vm through `vm exec`, its stdin and
// stdout one end of a socketpair, and returns a client on the other.
func (e *env) stdioAgent(t *testing.T, vm string, key []byte) *guest.Client {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	hostEnd, cmdEnd := os.NewFile(uintptr(fds[0]), "host"), os.NewFile(uintptr(fds[1]), "exec")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := e.cmd(ctx, "vm", "exec", vm, "--", "/root/agentstdio", "/root/stdio.key")
	var stderr strings.Builder
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cmdEnd, cmdEnd, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmdEnd.Close()
	conn, err := net.FileConn(hostEnd)
	hostEnd.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := guest.NewClient(conn, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancel()
			<-done
		}
		cancel()
		t.Logf("agentstdio stderr:\n%s", stderr.String())
	})
	return c
}
