package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/guest"
	"banger/internal/guestnet"
)

// recordedSystem records what reidentify asks of the system, in order,
// and fails the step named in fail.
type recordedSystem struct {
	mu    sync.Mutex
	calls []string
	fail  string
}

func (r *recordedSystem) record(step, what string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, what)
	if step == r.fail {
		return fmt.Errorf("%s refused by the test", step)
	}
	return nil
}

func (r *recordedSystem) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recordedSystem) system() system {
	return system{
		setClock: func(t time.Time) error { return r.record("clock", "clock "+t.UTC().Format(time.RFC3339)) },
		setNetwork: func(c guestnet.Config) error {
			return r.record("network", fmt.Sprintf("network %s %s via %s dns %v", c.MAC, c.Addr, c.GW, c.DNS))
		},
		setHostname: func(h string) error { return r.record("hostname", "hostname "+h) },
		restartSSHD: func(ctx context.Context) error { return r.record("sshd", "sshd") },
	}
}

var newAgentKey = bytes.Repeat([]byte{0x5a}, guest.KeySize)

func identityRequest() guest.ReidentifyRequest {
	return guest.ReidentifyRequest{
		Time:       time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC),
		Hostname:   "fork1",
		MAC:        "02:42:ac:10:00:09",
		Address:    "172.16.0.9/24",
		Gateway:    "172.16.0.1",
		DNS:        []string{"172.16.0.1"},
		MachineID:  "0123456789abcdef0123456789abcdef",
		HostKey:    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		HostKeyPub: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfork root@fork1",
		AgentKey:   hex.EncodeToString(newAgentKey),
	}
}

// seedRoot gives root the files of the guest a snapshot was taken of.
func seedRoot(t *testing.T, root string) {
	t.Helper()
	for name, content := range map[string]string{
		"etc/hosts":                    "127.0.0.1\tlocalhost\n127.0.1.1\tsource\n",
		"etc/hostname":                 "source\n",
		"etc/machine-id":               "ffffffffffffffffffffffffffffffff\n",
		"var/lib/dbus/machine-id":      "ffffffffffffffffffffffffffffffff\n",
		"etc/ssh/ssh_host_ed25519_key": "old private\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFile checks a file's content and permissions.
func checkFile(t *testing.T, path, want string, mode fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", path, b, err, want)
		return
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != mode {
		t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), mode)
	}
}

// noTempFiles checks that nothing staged is left in dir.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
}

func TestReidentify(t *testing.T) {
	rec := &recordedSystem{}
	ta := startAgentWith(t, 0, func(s *Server) {
		s.sys = rec.system()
		seedRoot(t, s.root)
	})
	root := ta.srv.root
	req := identityRequest()
	if err := ta.client.Reidentify(callCtx(t, 10*time.Second), req); err != nil {
		t.Fatalf("Reidentify: %v", err)
	}
	want := []string{
		"clock 2026-12-02T14:00:00Z",
		"network 02:42:ac:10:00:09 172.16.0.9/24 via 172.16.0.1 dns [172.16.0.1]",
		"hostname fork1",
		"sshd",
	}
	// The network changes beside the files (and the hostname); sshd is last.
	got := rec.got()
	if len(got) == 4 && got[1] == want[2] {
		got[1], got[2] = got[2], got[1]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("system changes (-want +got):\n%s", diff)
	}
	checkFile(t, filepath.Join(root, "etc/hostname"), "fork1\n", 0o644)
	checkFile(t, filepath.Join(root, "etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tfork1\n", 0o644)
	checkFile(t, filepath.Join(root, "etc/resolv.conf"), "nameserver 172.16.0.1\n", 0o644)
	checkFile(t, filepath.Join(root, "etc/machine-id"), req.MachineID+"\n", 0o444)
	checkFile(t, filepath.Join(root, "var/lib/dbus/machine-id"), req.MachineID+"\n", 0o444)
	checkFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), req.HostKey, 0o600)
	checkFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"), req.HostKeyPub+"\n", 0o644)

	// The connection that sent it goes on; the next ones need the new key.
	if _, err := ta.client.Hello(callCtx(t, 10*time.Second)); err != nil {
		t.Errorf("hello on the reidentifying connection: %v", err)
	}
	if herr, _ := helloConn(t, ta.srv, testKey); !errors.Is(herr, guest.ErrUnauthenticated) {
		t.Errorf("a new connection with the old key: %v, want refused", herr)
	}
	if herr, serr := helloConn(t, ta.srv, newAgentKey); herr != nil || serr != nil {
		t.Errorf("a new connection with the new key: hello %v, agent %v", herr, serr)
	}
	checkFile(t, ta.srv.keyFile, hex.EncodeToString(newAgentKey)+"\n", 0o600)
	noTempFiles(t, filepath.Dir(ta.srv.keyFile))

	// Without an agent key the key stays; a D-Bus machine-id that is a
	// symlink is left to follow /etc/machine-id.
	dbus := filepath.Join(root, "var/lib/dbus/machine-id")
	os.Remove(dbus)
	if err := os.Symlink("/etc/machine-id", dbus); err != nil {
		t.Fatal(err)
	}
	req.AgentKey, req.MachineID, req.DNS = "", "fedcba9876543210fedcba9876543210", nil
	os.Remove(filepath.Join(root, "etc/resolv.conf"))
	if err := ta.client.Reidentify(callCtx(t, 10*time.Second), req); err != nil {
		t.Fatalf("second Reidentify: %v", err)
	}
	if target, err := os.Readlink(dbus); err != nil || target != "/etc/machine-id" {
		t.Errorf("dbus machine-id symlink = %q, %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/resolv.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("resolv.conf written without DNS: %v", err)
	}
	if herr, serr := helloConn(t, ta.srv, newAgentKey); herr != nil || serr != nil {
		t.Errorf("key changed without agent_key: hello %v, agent %v", herr, serr)
	}
}

// sendRaw sends a reidentify request as it is, past the client's own
// checks, and returns the agent's error.
func sendRaw(t *testing.T, c *guest.Client, req guest.ReidentifyRequest) error {
	t.Helper()
	st, err := c.OpenStream(callCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := guest.Request{Version: guest.ProtocolVersion, Op: guest.OpReidentify, Reidentify: &req}
	if err := guest.NewFrameWriter(st).WriteJSON(guest.FrameRequest, r); err != nil {
		t.Fatal(err)
	}
	f, err := guest.ReadFrame(st)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != guest.FrameError {
		return nil
	}
	return guest.DecodeError(f)
}

func TestReidentifyRefusesBadRequests(t *testing.T) {
	rec := &recordedSystem{}
	ta := startAgentWith(t, 0, func(s *Server) { s.sys = rec.system() })
	tests := []struct {
		field  string
		change func(*guest.ReidentifyRequest)
	}{
		{"time", func(r *guest.ReidentifyRequest) { r.Time = time.Time{} }},
		{"hostname", func(r *guest.ReidentifyRequest) { r.Hostname = "-bad" }},
		{"mac", func(r *guest.ReidentifyRequest) { r.MAC = "02:42:ac:10:00" }},
		{"address", func(r *guest.ReidentifyRequest) { r.Address = "172.16.0.9" }},
		{"gateway", func(r *guest.ReidentifyRequest) { r.Gateway = "10.0.0.1" }},
		{"machine_id", func(r *guest.ReidentifyRequest) { r.MachineID = "0123" }},
		{"host_key", func(r *guest.ReidentifyRequest) { r.HostKey = "" }},
		{"agent_key", func(r *guest.ReidentifyRequest) { r.AgentKey = "abcd" }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			req := identityRequest()
			tt.change(&req)
			err := sendRaw(t, ta.client, req)
			var re *guest.RemoteError
			if !errors.As(err, &re) || re.Kind != guest.KindInvalid || !strings.Contains(re.Message, "bad "+tt.field) {
				t.Fatalf("agent answered %v, want an invalid-request error naming %s", err, tt.field)
			}
			// The client refuses it too, before sending.
			if err := ta.client.Reidentify(callCtx(t, 10*time.Second), req); err == nil || !strings.Contains(err.Error(), "bad "+tt.field) {
				t.Errorf("client: %v, want an error naming %s", err, tt.field)
			}
		})
	}
	// Nothing changed: no system call, no file, the same key.
	if got := rec.got(); len(got) != 0 {
		t.Errorf("bad requests changed the system: %v", got)
	}
	if ents, _ := os.ReadDir(ta.srv.root); len(ents) != 0 {
		t.Errorf("bad requests wrote files: %v", ents)
	}
	if herr, _ := helloConn(t, ta.srv, testKey); herr != nil {
		t.Errorf("the key changed: %v", herr)
	}
	noTempFiles(t, filepath.Dir(ta.srv.keyFile))
}

func TestReidentifyStepFails(t *testing.T) {
	rec := &recordedSystem{fail: "network"}
	ta := startAgentWith(t, 0, func(s *Server) {
		s.sys = rec.system()
		seedRoot(t, s.root)
	})
	err := ta.client.Reidentify(callCtx(t, 10*time.Second), identityRequest())
	var re *guest.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "reidentify: network: network refused by the test") {
		t.Fatalf("Reidentify = %v, want the network step's error", err)
	}
	// The file steps run beside the network; sshd, after it, does not.
	if got := rec.got(); slices.Contains(got, "sshd") || !slices.Contains(got, "clock 2026-12-02T14:00:00Z") {
		t.Errorf("steps run: %v, want the clock and not sshd", got)
	}
	// The key stays the old one and nothing staged is left.
	if herr, _ := helloConn(t, ta.srv, testKey); herr != nil {
		t.Errorf("old key after a failed reidentify: %v", herr)
	}
	if herr, _ := helloConn(t, ta.srv, newAgentKey); !errors.Is(herr, guest.ErrUnauthenticated) {
		t.Errorf("new key after a failed reidentify: %v, want refused", herr)
	}
	noTempFiles(t, filepath.Dir(ta.srv.keyFile))
}

// fakeProc is a /proc with the processes, sockets and TCP table the
// test gives it.
type fakeProc struct {
	t   *testing.T
	dir string
}

// proc adds a process with comm and fds pointing at socket inodes.
func (p fakeProc) proc(pid int, comm string, socks ...uint64) {
	d := filepath.Join(p.dir, fmt.Sprint(pid))
	os.RemoveAll(d)
	if err := os.MkdirAll(filepath.Join(d, "fd"), 0o755); err != nil {
		p.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "comm"), []byte(comm+"\n"), 0o644)
	for i, ino := range socks {
		os.Symlink(fmt.Sprintf("socket:[%d]", ino), filepath.Join(d, "fd", fmt.Sprint(3+i)))
	}
	os.Symlink("/dev/null", filepath.Join(d, "fd", "0"))
}

// tcp writes net/tcp: listen inodes in LISTEN state, other in ESTABLISHED.
func (p fakeProc) tcp(listen []uint64, other ...uint64) {
	var b strings.Builder
	b.WriteString("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	for i, ino := range listen {
		fmt.Fprintf(&b, "   %d: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 100 0 0 10 0\n", i, ino)
	}
	for i, ino := range other {
		fmt.Fprintf(&b, "   %d: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 100 0 0 10 0\n", 10+i, ino)
	}
	os.MkdirAll(filepath.Join(p.dir, "net"), 0o755)
	if err := atomicWrite(filepath.Join(p.dir, "net/tcp"), b.String()); err != nil {
		p.t.Fatal(err)
	}
}

func atomicWrite(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func TestSSHDListeners(t *testing.T) {
	p := fakeProc{t, t.TempDir()}
	p.proc(1, "systemd", 100) // systemd holding a socket-activated port is not sshd
	p.proc(10, "sshd", 101, 102)
	p.proc(11, "sshd", 300) // a connection's sshd: its socket is not listening
	p.proc(13, "sshd", 200)
	p.proc(14, "sshd-session", 301)
	p.tcp([]uint64{100, 101, 200}, 300, 301)
	os.WriteFile(filepath.Join(p.dir, "net/tcp6"), []byte("header\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0 100 0 0 10 0\n"), 0o644)
	want := map[int]map[uint64]bool{10: {101: true, 102: true}, 13: {200: true}}
	if diff := cmp.Diff(want, sshdListeners(p.dir)); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
}

// hupChild starts a process that survives SIGHUP and reports each one in
// the file it returns: the pid reloadSSHD signals is real.
func hupChild(t *testing.T) (int, string) {
	t.Helper()
	mark := filepath.Join(t.TempDir(), "hup")
	cmd := exec.Command("sh", "-c", `trap 'echo hup >> "$0"' HUP; echo ready >> "$0"; while :; do sleep 0.05; done`, mark)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(mark); strings.Contains(string(b), "ready") {
			return cmd.Process.Pid, mark
		}
		if time.Now().After(deadline) {
			t.Fatal("child never ready")
		}
	}
}

func TestReloadSSHD(t *testing.T) {
	t.Run("no sshd", func(t *testing.T) {
		if err := reloadSSHD(callCtx(t, time.Second), t.TempDir()); err != nil {
			t.Errorf("reloadSSHD without sshd: %v", err)
		}
	})
	tests := []struct {
		name   string
		reexec func(p fakeProc, pid int) // what sshd does on SIGHUP
		ok     bool
	}{
		{"re-executes in place", func(p fakeProc, pid int) { p.proc(pid, "sshd", 555); p.tcp([]uint64{555}) }, true},
		{"daemonizes again", func(p fakeProc, pid int) {
			os.RemoveAll(filepath.Join(p.dir, fmt.Sprint(pid)))
			p.proc(pid+100000, "sshd", 556)
			p.tcp([]uint64{556})
		}, true},
		{"exits", func(p fakeProc, pid int) { os.RemoveAll(filepath.Join(p.dir, fmt.Sprint(pid))); p.tcp(nil) }, false},
		{"ignores it", func(fakeProc, int) {}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, mark := hupChild(t)
			p := fakeProc{t, t.TempDir()}
			p.proc(pid, "sshd", 100)
			p.tcp([]uint64{100})
			go func() {
				time.Sleep(150 * time.Millisecond)
				tt.reexec(p, pid)
			}()
			start := time.Now()
			err := reloadSSHD(callCtx(t, 600*time.Millisecond), p.dir)
			if tt.ok && (err != nil || time.Since(start) < 150*time.Millisecond) {
				t.Errorf("reloadSSHD = %v after %v, want nil once sshd listens again", err, time.Since(start))
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "not listening again")) {
				t.Errorf("reloadSSHD = %v, want an error saying sshd is not back", err)
			}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if b, _ := os.ReadFile(mark); strings.Contains(string(b), "hup") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("sshd got no SIGHUP")
				}
			}
		})
	}
}

func TestKeysReadPerConnection(t *testing.T) {
	listener := func(t *testing.T, argv ...string) fakeProc {
		p := fakeProc{t, t.TempDir()}
		p.proc(10, "sshd", 101)
		p.tcp([]uint64{101})
		os.WriteFile(filepath.Join(p.dir, "10", "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644)
		return p
	}
	tests := []struct {
		name    string
		argv    []string
		session string // an sshd-session installed under the root
		want    bool
	}{
		{"OpenSSH before 9.8", []string{"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"}, "", true},
		{"plain -D", []string{"/usr/sbin/sshd", "-D"}, "", true},
		{"-r: no re-execution", []string{"/usr/sbin/sshd", "-D", "-r"}, "", false},
		{"-r in a cluster", []string{"/usr/sbin/sshd", "-Dr"}, "", false},
		{"-r in a listener's title", []string{"sshd: /usr/sbin/sshd -D -r [listener] 0 of 10-100 startups"}, "", false},
		{"r inside an option's value", []string{"/usr/sbin/sshd", "-D", "-fr"}, "", true},
		{"OpenSSH 9.8 or later", []string{"/usr/sbin/sshd", "-D"}, "usr/lib/openssh/sshd-session", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := listener(t, tt.argv...)
			root := t.TempDir()
			if tt.session != "" {
				os.MkdirAll(filepath.Join(root, filepath.Dir(tt.session)), 0o755)
				os.WriteFile(filepath.Join(root, tt.session), nil, 0o755)
			}
			if got := keysReadPerConnection(p.dir, root); got != tt.want {
				t.Errorf("keysReadPerConnection = %v, want %v", got, tt.want)
			}
		})
	}
}
