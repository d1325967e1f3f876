package agent

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/guest"
	"banger/internal/prereq"
	"banger/internal/sshkeys"
)

// TestQEMURestoreReidentify boots the agent-as-init microVM of
// TestQEMUVirtioSerial with its RAM in a shared file and a virtio-net NIC
// on a QEMU hub that leads nowhere, snapshots it (stop, migrate with
// x-ignore-shared), and restores a clone from the snapshot in a new QEMU
// whose agent socket is a new one. The clone's agent must answer on the
// new transport with its session still running, and apply a new identity
// for real: clock, MAC (seen by QEMU too), address, route, hostname,
// machine-id, host key, and the agent key for the next connection.
func TestQEMURestoreReidentify(t *testing.T) {
	if testing.Short() {
		prereq.ByDesign(t, "boots a VM; skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		prereq.Missing(t, "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	kernelRoot := kernelFixture(t)
	dir := t.TempDir()
	initrd := buildSmokeInitrd(t, dir, kernelRoot, staticBusybox(t))
	kernels, _ := filepath.Glob(filepath.Join(kernelRoot, "boot", "vmlinuz-*"))
	ctx := callCtx(t, 3*time.Minute)
	mem := filepath.Join(dir, "mem")
	vm := func(name, share string, extra ...string) []string {
		args := []string{"-M", "microvm,accel=tcg,memory-backend=mem", "-m", "256", "-smp", "1",
			"-object", "memory-backend-file,id=mem,size=256M,mem-path=" + mem + ",share=" + share,
			"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
			"-serial", "file:" + filepath.Join(dir, name+".console"),
			"-qmp", "unix:" + filepath.Join(dir, name+".qmp") + ",server=on,wait=off",
			"-kernel", kernels[0], "-initrd", initrd,
			"-append", "console=ttyS0 quiet tsc=reliable tsc_early_khz=" + hostTSCkHz(t),
			"-netdev", "hubport,id=n0,hubid=0",
			"-device", "virtio-net-device,id=net0,netdev=n0,mac=02:00:00:00:00:01",
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,path=" + filepath.Join(dir, name+".sock") + ",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=" + guest.SerialPortName}
		return append(args, extra...)
	}

	src := startQEMU(t, ctx, qemu, dir, "src", vm("src", "on"))
	c := dialVM(t, ctx, filepath.Join(dir, "src.sock"))
	vmExec(t, ctx, c, []string{"sh", "-c", "echo before > /root/before"}, false, 0, "")
	vmSessionStart(t, ctx, c)

	// Snapshot: the RAM stays in mem, the device state goes to state.
	state := filepath.Join(dir, "state")
	q := dialQMP(t, ctx, filepath.Join(dir, "src.qmp"))
	q.do(t, "stop", nil)
	q.do(t, "migrate-set-capabilities", ignoreShared)
	start := time.Now()
	q.do(t, "migrate", map[string]any{"uri": "exec:cat > " + state})
	q.waitMigration(t, ctx)
	t.Logf("snapshot saved in %v", time.Since(start))
	q.do(t, "quit", nil)
	src.wait(t)
	c.Close()

	// Restore a clone, on a private copy of the RAM and a new agent socket.
	start = time.Now()
	startQEMU(t, ctx, qemu, dir, "clone", vm("clone", "off", "-incoming", "defer", "-S"))
	q = dialQMP(t, ctx, filepath.Join(dir, "clone.qmp"))
	q.do(t, "migrate-set-capabilities", ignoreShared)
	q.do(t, "migrate-incoming", map[string]any{"uri": "exec:cat " + state})
	q.waitMigration(t, ctx)
	q.do(t, "cont", nil)
	c = dialVM(t, ctx, filepath.Join(dir, "clone.sock"))
	defer c.Close()
	t.Logf("clone's agent answered %v after its qemu started", time.Since(start))

	// The agent's sessions survived the transport's reset.
	vmSessionCheck(t, ctx, c)
	vmExec(t, ctx, c, []string{"cat", "/root/before"}, false, 0, "before\n")

	host, err := sshkeys.Generate("root@clone1")
	if err != nil {
		t.Fatal(err)
	}
	newKey := make([]byte, guest.KeySize)
	for i := range newKey {
		newKey[i] = byte(i)
	}
	// An hour ahead, so that the clock is seen to be set, not just right.
	when := time.Now().Add(time.Hour)
	req := guest.ReidentifyRequest{
		Time: when, Hostname: "clone1", MAC: "02:42:0a:00:02:0f",
		Address: "10.0.2.15/24", Gateway: "10.0.2.2", DNS: []string{"10.0.2.3"},
		MachineID: "00112233445566778899aabbccddeeff",
		HostKey:   string(host.Private), HostKeyPub: host.Public,
		AgentKey: hex.EncodeToString(newKey),
	}
	start = time.Now()
	if err := c.Reidentify(ctx, req); err != nil {
		t.Fatalf("Reidentify: %v", err)
	}
	t.Logf("reidentify took %v", time.Since(start))

	vmExec(t, ctx, c, []string{"hostname"}, false, 0, "clone1\n")
	vmExec(t, ctx, c, []string{"cat", "/etc/hostname", "/etc/machine-id", "/sys/class/net/eth0/address", "/etc/resolv.conf"}, false, 0,
		"clone1\n"+req.MachineID+"\n"+req.MAC+"\nnameserver 10.0.2.3\n")
	vmExec(t, ctx, c, []string{"sh", "-c", "ip -4 -o addr show dev eth0 | grep -o 'inet [^ ]*'"}, false, 0, "inet 10.0.2.15/24\n")
	vmExec(t, ctx, c, []string{"sh", "-c", "ip route show | grep default"}, false, 0, "default via 10.0.2.2 dev eth0 \n")
	vmExec(t, ctx, c, []string{"stat", "-c", "%a %n", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"}, false, 0,
		"600 /etc/ssh/ssh_host_ed25519_key\n644 /etc/ssh/ssh_host_ed25519_key.pub\n")
	vmExec(t, ctx, c, []string{"cat", "/etc/ssh/ssh_host_ed25519_key.pub"}, false, 0, host.Public+"\n")
	var out strings.Builder
	if _, err := c.Exec(ctx, guest.ExecRequest{Argv: []string{"date", "+%s"}}, nil, &out, nil); err != nil {
		t.Fatal(err)
	}
	guestNow, _ := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if d := time.Unix(guestNow, 0).Sub(when); d < -5*time.Second || d > 60*time.Second {
		t.Errorf("guest clock %s, set to %s (off by %v)", time.Unix(guestNow, 0), when, d)
	}
	// QEMU's virtio-net took the MAC too: it filters what it delivers by it.
	var filters []struct {
		MainMAC string `json:"main-mac"`
	}
	if err := json.Unmarshal(q.do(t, "query-rx-filter", map[string]any{"name": "net0"}), &filters); err != nil || len(filters) != 1 || filters[0].MainMAC != req.MAC {
		t.Errorf("QEMU's rx filter: %+v %v, want main-mac %s", filters, err, req.MAC)
	}

	// The next connection must bring the new agent key.
	c.Close()
	refusedWithoutKey(t, ctx, func() (net.Conn, error) { return net.Dial("unix", filepath.Join(dir, "clone.sock")) })
	conn, err := net.Dial("unix", filepath.Join(dir, "clone.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := guest.NewClient(conn, newKey, testLogger(t))
	defer c2.Close()
	if _, err := c2.Hello(ctx); err != nil {
		t.Fatalf("hello with the new agent key: %v", err)
	}
	vmExec(t, ctx, c2, []string{"cat", guest.AgentKeyPath}, false, 0, hex.EncodeToString(newKey)+"\n")
}

var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// qemuProc is a QEMU a test started.
type qemuProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *qemuProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("qemu still running 30 s after quit")
	}
}

// startQEMU starts qemu with args; it is killed when the test ends, and
// its console (dir/name.console) logged if the test failed.
func startQEMU(t *testing.T, ctx context.Context, qemu, dir, name string, args []string) *qemuProc {
	t.Helper()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &qemuProc{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, name+".console"))
			t.Logf("%s console:\n%s", name, b)
		}
	})
	return p
}

// qmpConn is a QMP connection in command mode.
type qmpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialQMP(t *testing.T, ctx context.Context, path string) *qmpConn {
	t.Helper()
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			q := &qmpConn{conn: conn, r: bufio.NewReader(conn)}
			t.Cleanup(func() { conn.Close() })
			if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
				t.Fatalf("qmp greeting: %v", err)
			}
			q.do(t, "qmp_capabilities", nil)
			return q
		}
		if ctx.Err() != nil {
			t.Fatalf("dialing qmp %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do runs a command and returns its "return", skipping events.
func (q *qmpConn) do(t *testing.T, cmd string, args any) json.RawMessage {
	t.Helper()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	_ = q.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		t.Fatalf("qmp %s: %v", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			if cmd == "quit" && errors.Is(err, net.ErrClosed) {
				return nil
			}
			t.Fatalf("qmp %s: %v", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			t.Fatalf("qmp %s: %v: %s", cmd, err, line)
		}
		if resp.Error != nil {
			t.Fatalf("qmp %s: %s", cmd, resp.Error.Desc)
		}
		if resp.Return != nil {
			return resp.Return
		}
	}
}

// waitMigration polls query-migrate until the migration completed.
func (q *qmpConn) waitMigration(t *testing.T, ctx context.Context) {
	t.Helper()
	for ctx.Err() == nil {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(q.do(t, "query-migrate", nil), &st); err != nil {
			t.Fatal(err)
		}
		switch st.Status {
		case "completed":
			return
		case "failed", "cancelled":
			t.Fatalf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(fmt.Errorf("migration did not complete: %w", ctx.Err()))
}
