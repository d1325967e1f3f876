package e2e

import (
	"banger/internal/prereq"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// localUser is a real second user on the host, made with useradd for one
// test and removed in t.Cleanup.
type localUser struct {
	name     string
	uid, gid int
}

func newLocalUser(t *testing.T) localUser {
	t.Helper()
	if _, err := exec.LookPath("useradd"); err != nil {
		prereq.Missing(t, "useradd not installed (apt-get install passwd)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		prereq.Missing(t, "setpriv not installed (apt-get install util-linux)")
	}
	b := make([]byte, 3)
	rand.Read(b)
	name := "bgsec" + hex.EncodeToString(b)
	run(t, "useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", name)
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return localUser{name: name, uid: uid, gid: gid}
}

// as runs a command as u inside the env's namespace, with the env's
// BANGER_HOME, and returns its combined output and exit code.
func (e *env) as(u localUser, args ...string) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", e.ns, "setpriv",
		"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--"}, args...)
	c := exec.CommandContext(ctx, "ip", full...)
	c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "BANGER_HOME=" + e.home,
		"BANGERD_BIN=" + filepath.Join(e.bin, "bangerd")}
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		e.t.Fatalf("%v as %s hung", args, u.name)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%v as %s: %v", args, u.name, err)
	}
	return string(out), code
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// A VM's QEMU runs as the unprivileged vmm user, without capabilities and
// under seccomp; another local user can neither use the daemon's socket
// nor read anything of the VM under the state directory.
func TestSecondUserLockedOut(t *testing.T) {
	e := noInitEnv(t)
	other := newLocalUser(t)
	// Like a home directory: others may traverse it, as they could any
	// ordinary BANGER_HOME; what protects the state is banger's own modes.
	os.Chmod(filepath.Dir(e.home), 0o755)
	os.Chmod(e.home, 0o755)
	e.ok("vm", "create", "--image", "tiny", "--name", "sec1", "--memory", "256M", "--cpus", "1")
	v := e.inspect("sec1")
	if v.State != "running" || v.PID == 0 {
		t.Fatalf("after create: %+v", v)
	}

	st := procStatus(t, v.PID)
	vmmUser, err := user.Lookup("banger-vmm")
	if err != nil {
		t.Fatalf("the daemon did not create the vmm user: %v", err)
	}
	uids := strings.Fields(st["Uid"])
	if len(uids) != 4 || uids[0] == "0" || uids[1] == "0" || uids[2] == "0" || uids[3] != vmmUser.Uid {
		t.Errorf("qemu Uid %q, want all four %s (banger-vmm), none 0", st["Uid"], vmmUser.Uid)
	}
	if st["Seccomp"] != "2" {
		t.Errorf("qemu Seccomp %q, want 2 (filter)", st["Seccomp"])
	}
	if st["CapEff"] != "0000000000000000" {
		t.Errorf("qemu CapEff %q, want none", st["CapEff"])
	}
	// The confined QEMU still serves the guest: the agent answers (the
	// tiny image has no commands, so its answer is "not found", 127).
	if r := e.banger("vm", "exec", "sec1", "--", "no-such-command"); r.code != 127 {
		t.Fatalf("exec in the confined vm: exit %d, want 127 from the agent: %s", r.code, r.stderr)
	}

	// vm cp writes through no planted temp file: the old fixed name
	// dst.banger-tmp, a symlink to a victim here, is left alone.
	cpDir := t.TempDir()
	victim := filepath.Join(cpDir, "victim")
	os.WriteFile(victim, []byte("untouched"), 0o600)
	dst := filepath.Join(cpDir, "hostname")
	os.Symlink(victim, dst+".banger-tmp")
	e.ok("vm", "cp", "sec1:/etc/hostname", dst)
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("vm cp wrote through the planted symlink: victim now %q", b)
	}
	if b, _ := os.ReadFile(dst); string(b) != "sec1\n" {
		t.Errorf("vm cp result %q, want the guest's hostname", b)
	}

	// The socket's directory is closed to the other user.
	out, code := e.as(other, filepath.Join(e.bin, "banger"), "vm", "list")
	if code == 0 {
		t.Fatalf("another user listed the vms:\n%s", out)
	}
	mustContain(t, "other user's vm list", out, "serves another user", e.home, "BANGER_HOME")
	if strings.Contains(out, "sudo") {
		t.Errorf("the refusal sends the other user to sudo:\n%s", out)
	}

	// Even when the directory is opened up by mistake, the daemon checks
	// the peer's uid and refuses.
	runDir := filepath.Join(e.home, "state", "run")
	os.Chmod(runDir, 0o755)
	os.Chmod(filepath.Join(runDir, "bangerd.sock"), 0o666)
	out, code = e.as(other, filepath.Join(e.bin, "banger"), "vm", "list")
	os.Chmod(runDir, 0o700)
	os.Chmod(filepath.Join(runDir, "bangerd.sock"), 0o600)
	if code == 0 {
		t.Fatalf("another user listed the vms through an open socket:\n%s", out)
	}
	mustContain(t, "peer check refusal", out, "serves only root and uid 0, not uid "+strconv.Itoa(other.uid))
	log, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	mustContain(t, "bangerd.log", string(log), "refused api connection", "uid="+strconv.Itoa(other.uid))
	if len(e.procs("bangerd")) != 1 {
		t.Errorf("bangerd processes: %v, want the one", e.procs("bangerd"))
	}

	// Nothing of the VM, and none of the daemon's own files, can be read.
	state := filepath.Join(e.home, "state")
	var paths []string
	filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !strings.HasPrefix(p, filepath.Join(state, "images")) && !strings.HasPrefix(p, filepath.Join(state, "kernels")) && p != state {
			paths = append(paths, p)
		}
		return nil
	})
	vmDir := filepath.Join(state, "vms")
	for _, want := range []string{"console.log", "qemu.log", "agent.sock"} {
		m, _ := filepath.Glob(filepath.Join(vmDir, "*", want))
		if len(m) == 0 {
			t.Errorf("no %s under %s: the test checks too little", want, vmDir)
		}
	}
	// The VM's disk is a layer in the layer store: private too.
	layers, _ := filepath.Glob(filepath.Join(state, "layers", "*.qcow2"))
	if len(layers) == 0 {
		t.Errorf("no qcow2 layer under %s/layers: the test checks too little", state)
	}
	if fi, err := os.Stat(filepath.Join(state, "layers")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("layer store: %v, want mode 0700", err)
	}
	for _, p := range layers {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v, want nothing for group or others", p, err)
		}
	}
	// And by their own modes, not only their directory's: regular files
	// under vms/ are 0600 or tighter, directories 0700.
	filepath.WalkDir(vmDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := d.Info()
		if fi != nil && (fi.Mode().IsRegular() || fi.IsDir()) && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %04o, want nothing for group or others", p, fi.Mode().Perm())
		}
		return nil
	})
	script := `for f in "$@"; do if [ -d "$f" ]; then ls "$f" >/dev/null 2>&1 && echo "LISTED $f"; elif [ -S "$f" ]; then continue; else head -c1 "$f" >/dev/null 2>&1 && echo "READ $f"; fi; done; echo checked $#`
	out, _ = e.as(other, append([]string{"sh", "-c", script, "sh"}, paths...)...)
	if strings.Contains(out, "READ ") || strings.Contains(out, "LISTED ") {
		t.Errorf("another user can read banger's state:\n%s", out)
	}
	mustContain(t, "file check", out, "checked "+strconv.Itoa(len(paths)))
	t.Logf("%d paths under the state dir checked as uid %d", len(paths), other.uid)
}

// A state directory someone else could change is refused with a message
// that says what to do, and nothing is created in it.
func TestStateDirRefused(t *testing.T) {
	e := newEnv(t)
	open := t.TempDir()
	os.Chmod(open, 0o777)
	e.home = open
	stderr := e.fails("vm", "list")
	mustContain(t, "world-writable BANGER_HOME", stderr, open+" is writable by group or others", "chmod go-w "+open)
	if _, err := os.Lstat(filepath.Join(open, "state")); err == nil {
		t.Errorf("a state dir was made under the refused %s", open)
	}

	group := t.TempDir()
	os.Chmod(group, 0o770)
	e.home = group
	stderr = e.fails("vm", "list")
	mustContain(t, "group-writable BANGER_HOME", stderr, group+" is writable by group or others")

	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(real, link)
	e.home = link
	stderr = e.fails("vm", "list")
	mustContain(t, "symlinked BANGER_HOME", stderr, link+" is a symlink", "real path: "+real)
	if _, err := os.Lstat(filepath.Join(real, "state")); err == nil {
		t.Errorf("a state dir was made through the symlink %s", link)
	}

	// A config file others can write is refused: bangerd runs qemu_bin as root.
	e.home = t.TempDir()
	cfg := filepath.Join(e.home, "config", "config.toml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("vmm = \"qemu\"\n"), 0o666)
	os.Chmod(cfg, 0o666)
	stderr = e.fails("vm", "list")
	mustContain(t, "world-writable config", stderr, cfg, "writable by group or others", "chmod go-w "+cfg)
	if len(e.procs("bangerd")) != 0 {
		t.Errorf("a bangerd runs after the refusals: %v", e.procs("bangerd"))
	}
}

// A second daemon (another state directory) in the same network namespace
// does not touch the first one's network: it says whose it is, and the
// first daemon's VM keeps its tap and its network.
func TestSecondDaemonSameNamespace(t *testing.T) {
	e := noInitEnv(t)
	e.ok("vm", "create", "--image", "tiny", "--name", "net1", "--memory", "256M", "--cpus", "1")
	before := e.network()
	tap := findTap(before, "net1")
	if tap == "" {
		t.Fatalf("vm net1 has no tap: %+v", before)
	}
	second := &env{t: t, ns: e.ns, home: t.TempDir(), bin: e.bin}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		second.cmd(ctx, "daemon", "stop").Run()
	})
	out := second.ok("network", "inspect")
	mustContain(t, "second daemon's network inspect", out, "network not managed by this daemon",
		filepath.Join(e.home, "state"), "another network namespace")
	// Restarting the second daemon reconciles nothing of the first's.
	second.ok("daemon", "restart")
	log, _ := os.ReadFile(filepath.Join(second.home, "state", "bangerd.log"))
	mustContain(t, "second bangerd.log", string(log), "not reconciling the network")
	if n := e.network(); !leaseHasTap(n, tap) {
		t.Fatalf("the first daemon's tap %s is gone after the second daemon started: %+v", tap, n)
	}
	if out := run(t, "ip", "-n", e.ns, "link", "show", tap); !strings.Contains(out, tap) {
		t.Fatalf("tap %s missing: %s", tap, out)
	}
	if r := e.banger("vm", "exec", "net1", "--", "no-such-command"); r.code != 127 {
		t.Fatalf("first daemon's vm after the second started: exit %d: %s", r.code, r.stderr)
	}
}

// leaseHasTap reports whether a lease in n is bound to tap.
func leaseHasTap(n netInfo, tap string) bool {
	for _, l := range n.Leases {
		if l.Tap == tap {
			return true
		}
	}
	return false
}
