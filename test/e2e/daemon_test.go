package e2e

import (
	"banger/internal/prereq"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The first CLI call starts the daemon; it answers with the same version.
func TestDaemonAutoStart(t *testing.T) {
	e := newEnv(t)
	out := e.ok("vm", "list", "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("fresh vm list = %q, want []", out)
	}
	if n := len(e.procs("bangerd")); n != 1 {
		t.Fatalf("%d bangerd processes after the first call, want 1", n)
	}
	var v struct{ Client, Daemon string }
	json.Unmarshal([]byte(e.ok("version", "--json")), &v)
	if v.Client == "" || v.Client != v.Daemon {
		t.Fatalf("client version %q, daemon version %q: want equal", v.Client, v.Daemon)
	}
	st, err := os.Stat(filepath.Join(e.home, "state", "run", "bangerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
}

// Several CLI calls racing to start the daemon end with exactly one.
func TestDaemonStartRace(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	results := make([]result, 6)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = e.banger("vm", "list")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("racer %d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	// Losers exit right after the race; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for len(e.procs("bangerd")) != 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if pids := e.procs("bangerd"); len(pids) != 1 {
		t.Fatalf("bangerd processes after the race: %v, want exactly one", pids)
	}
}

// A daemon killed with SIGKILL leaves a stale socket; the next call starts
// a new daemon cleanly.
func TestDaemonKilledIsRestarted(t *testing.T) {
	e := newEnv(t)
	e.ok("daemon", "start")
	old := e.daemonPID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(e.home, "state", "run", "bangerd.sock")); err != nil {
		t.Fatalf("expected a stale socket after SIGKILL: %v", err)
	}
	e.ok("vm", "list")
	if pid := e.daemonPID(); pid == old || pid == 0 {
		t.Fatalf("daemon pid %d after restart (old %d)", pid, old)
	}
}

// A second daemon on the same state directory refuses to run and says why.
func TestSecondDaemonRefused(t *testing.T) {
	e := newEnv(t)
	e.ok("daemon", "start")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, filepath.Join(e.bin, "bangerd"), "--foreground")
	c.Env = append(os.Environ(), "BANGER_HOME="+e.home)
	out, err := c.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 {
		t.Fatalf("second bangerd: %v, want exit 3\n%s", err, out)
	}
	mustContain(t, "second bangerd output", string(out), "another bangerd is running", "pid")
	if len(e.procs("bangerd")) != 1 {
		t.Fatal("the first daemon did not survive")
	}
}

// A corrupt config is an error naming the file, the line and the key.
func TestCorruptConfig(t *testing.T) {
	e := newEnv(t)
	cfgDir := filepath.Join(e.home, "config")
	os.MkdirAll(cfgDir, 0o755)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("vmm = \"qemu\"\ncidr = \"172.16.0.0/33\"\nbogus = 1\n"), 0o644)
	stderr := e.fails("config", "show")
	mustContain(t, "config error", stderr, "config.toml:2", "cidr", "config.toml:3", `unknown key "bogus"`)
	stderr = e.fails("doctor")
	mustContain(t, "doctor with bad config", stderr, "config.toml:2")
	// The daemon refuses to start on it, and says why.
	stderr = e.fails("vm", "list")
	mustContain(t, "daemon start with bad config", stderr, "could not be started", "config.toml:2", "sudo bangerd --foreground")
}

// A state directory that cannot be made gives an actionable error.
func TestStateDirNotWritable(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(e.home, "file")
	os.WriteFile(file, nil, 0o644)
	e.home = filepath.Join(file, "home") // a path under a regular file
	stderr := e.fails("vm", "list")
	mustContain(t, "not-writable error", stderr, "could not be started", "state directory", "BANGER_HOME")
}

// A CLI of another build than the running daemon says so and how to fix it.
func TestVersionMismatch(t *testing.T) {
	e := newEnv(t)
	other := t.TempDir()
	if err := build(other, "e2e-other"); err != nil {
		t.Fatal(err)
	}
	e.ok("daemon", "start")
	e2 := *e
	e2.bin = other
	stderr := e2.fails("vm", "list")
	mustContain(t, "mismatch error", stderr, "e2e-other", "banger daemon restart")
	e2.ok("daemon", "restart")
	mustContain(t, "version after restart", e2.ok("version"), "bangerd e2e-other")
}

// doctor runs, reports the VMM choice, and exits 0 on a host with the
// required parts.
func TestDoctor(t *testing.T) {
	e := newEnv(t)
	out := e.ok("doctor")
	mustContain(t, "doctor", out, "qemu", "/dev/kvm")
	out = e.ok("doctor", "--json")
	mustContain(t, "doctor --json", out, `"checks"`, `"vmm"`)
}

// A user who is not root gets the daemon through sudo; when sudo cannot
// run it (here: no password, no terminal) the error says what to run.
func TestNonRootStartsThroughSudo(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		prereq.Missing(t, "setpriv not installed")
	}
	if _, err := exec.LookPath("sudo"); err != nil {
		prereq.Missing(t, "sudo not installed")
	}
	e := newEnv(t)
	home := filepath.Join(os.TempDir(), filepath.Base(e.home)+"-nobody")
	os.MkdirAll(home, 0o777)
	os.Chmod(home, 0o777)
	t.Cleanup(func() { os.RemoveAll(home) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		filepath.Join(e.bin, "banger"), "vm", "list")
	c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "BANGER_HOME=" + home,
		"BANGERD_BIN=" + filepath.Join(e.bin, "bangerd")}
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatal("banger hung waiting for sudo")
	}
	if err == nil {
		t.Fatalf("banger as nobody started a daemon without root:\n%s", out)
	}
	mustContain(t, "non-root start error", string(out), "could not be started", "sudo", "sudo bangerd --foreground")
	t.Logf("as nobody: %s", out)
	if len(e.procs("bangerd")) != 0 {
		t.Fatal("a bangerd runs although sudo failed")
	}
}

// A user whom sudoers lets run bangerd without a password (SETENV, as
// banger passes BANGER_HOME through: without it sudo refuses) gets a daemon
// running as root through sudo, and can talk to it. The test makes the
// user and the sudoers rule, and removes both.
func TestNonRootSudoSucceeds(t *testing.T) {
	for _, tool := range []string{"setpriv", "sudo", "useradd", "userdel", "visudo"} {
		if _, err := exec.LookPath(tool); err != nil {
			prereq.Missing(t, "%s not installed (apt-get install sudo util-linux passwd)", tool)
		}
	}
	e := newEnv(t)
	user := "bgt" + e.ns[len(e.ns)-8:]
	run(t, "useradd", "--create-home", "--home-dir", "/home/"+user, "--shell", "/bin/sh", user)
	t.Cleanup(func() { exec.Command("userdel", "--remove", "--force", user).Run() })
	// The user must reach the binaries: copy them where anyone can.
	bin, err := os.MkdirTemp("", "banger-e2e-sudo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	for _, b := range []string{"banger", "bangerd"} {
		run(t, "cp", filepath.Join(e.bin, b), filepath.Join(bin, b))
	}
	bangerd := filepath.Join(bin, "bangerd")
	rule := fmt.Sprintf("%s ALL=(root) NOPASSWD:SETENV: %s\n", user, bangerd)
	sudoers := "/etc/sudoers.d/banger-e2e-" + user
	if err := os.WriteFile(sudoers+".tmp", []byte(rule), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(sudoers); os.Remove(sudoers + ".tmp") })
	run(t, "visudo", "-c", "-q", "-f", sudoers+".tmp")
	if err := os.Rename(sudoers+".tmp", sudoers); err != nil {
		t.Fatal(err)
	}
	home := "/home/" + user
	asUser := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		full := append([]string{"netns", "exec", e.ns, "setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups",
			filepath.Join(bin, "banger")}, args...)
		c := exec.CommandContext(ctx, "ip", full...)
		c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "USER=" + user,
			"BANGER_HOME=" + home + "/banger", "BANGERD_BIN=" + bangerd}
		out, err := c.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("banger %v as %s hung", args, user)
		}
		return string(out), err
	}
	if out, err := asUser("vm", "list"); err != nil {
		t.Fatalf("banger vm list as %s with a NOPASSWD rule for bangerd: %v\n%s", user, err, out)
	}
	pids := e.procs("bangerd")
	if len(pids) != 1 {
		t.Fatalf("%d bangerd processes after the sudo start, want 1", len(pids))
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	if !regexp.MustCompile(`(?m)^Uid:\s+0\s`).Match(status) {
		t.Fatalf("bangerd started through sudo does not run as root:\n%s", status)
	}
	out, err := asUser("daemon", "status", "--json")
	if err != nil || !regexp.MustCompile(fmt.Sprintf(`"pid":\s*%d\b`, pids[0])).MatchString(out) {
		t.Fatalf("daemon status as %s: %v\n%s", user, err, out)
	}
	if out, err := asUser("daemon", "stop"); err != nil {
		t.Fatalf("daemon stop as %s: %v\n%s", user, err, out)
	}
}
