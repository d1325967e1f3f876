// Package e2e runs banger as a user would: the built binaries, a real
// daemon inside a network namespace the test creates, real VMs under QEMU.
// It runs when BANGER_E2E=1 (make e2e) as root, and skips otherwise.
package e2e

import (
	"banger/internal/prereq"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binDir holds banger, bangerd and banger-agent, built once per run.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv("BANGER_E2E") != "1" {
		fmt.Println("e2e: skipped (set BANGER_E2E=1 and run as root; make e2e does both)")
		os.Exit(0)
	}
	binDir = os.Getenv("BANGER_BIN_DIR")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "banger-e2e-bin-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if err := build(dir, "e2e"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binDir = dir
	}
	os.Exit(m.Run())
}

// build compiles the three binaries into dir, stamped with version.
func build(dir, version string, tags ...string) error {
	ld := "-X banger/internal/version.Version=" + version
	for _, b := range []struct{ name, pkg, cgo string }{
		{"banger", "./cmd/banger", "1"}, {"bangerd", "./cmd/bangerd", "1"}, {"banger-agent", "./cmd/banger-agent", "0"},
	} {
		cmd := exec.Command("go", "build", "-tags", strings.Join(tags, ","), "-ldflags", ld, "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", b.name, err, out)
		}
	}
	return nil
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// fixtures is the directory scripts/fixtures.sh filled.
func fixtures(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("BANGER_FIXTURES")
	if dir == "" {
		dir = "/var/tmp/banger-fixtures"
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs.ext4")); err != nil {
		t.Fatalf("fixtures missing in %s: run make fixtures (scripts/fixtures.sh)", dir)
	}
	return dir
}

func fixtureDeb(t testing.TB) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(fixtures(t), "linux-image-*-cloud-amd64_*.deb"))
	if len(m) == 0 {
		t.Fatal("kernel .deb fixture missing: run make fixtures")
	}
	return m[0]
}

// env is one test's world: a network namespace, a BANGER_HOME, and the
// daemon the CLI starts inside them.
type env struct {
	t    testing.TB
	ns   string
	home string
	bin  string // directory of the binaries this env runs
	// extra is more environment for the CLI (and the daemon it starts).
	extra []string
	// warm leaves warm starts on (the product's default). Off, every
	// create boots as it would without them: most tests test something
	// else, and their VMs (and the crash matrix's points) should not
	// depend on which create came first.
	warm bool
	// mounts are the test's own mount points under home (a state
	// directory on a file system of its own), not leaks.
	mounts []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "e2e needs root (network namespaces, taps, QEMU)")
	}
	b := make([]byte, 4)
	rand.Read(b)
	e := &env{t: t, ns: "banger-e2e-" + hex.EncodeToString(b), home: t.TempDir(), bin: binDir}
	run(t, "ip", "netns", "add", e.ns)
	t.Cleanup(e.teardown)
	run(t, "ip", "netns", "exec", e.ns, "ip", "link", "set", "lo", "up")
	return e
}

// teardown runs even when the test failed: delete VMs, stop the daemon,
// kill whatever still runs in the namespace, remove the namespace.
func (e *env) teardown() {
	if e.t.Failed() {
		if b, err := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log")); err == nil {
			e.t.Logf("bangerd.log:\n%s", tail(string(b), 4000))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := e.cmd(ctx, "vm", "list", "--json").Output(); err == nil {
		var vms []struct{ Name string }
		json.Unmarshal(out, &vms)
		for _, v := range vms {
			e.cmd(ctx, "vm", "delete", "--force", v.Name).Run()
		}
	}
	e.cmd(ctx, "daemon", "stop").Run()
	for _, pid := range e.pids() {
		if pid != os.Getpid() { // never the test itself, should a thread of it be in the namespace
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(100 * time.Millisecond)
	exec.Command("ip", "netns", "del", e.ns).Run()
}

// pids lists the processes living in the env's namespace.
func (e *env) pids() []int {
	out, _ := exec.Command("ip", "netns", "pids", e.ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// procs counts the live processes in the namespace whose command name is
// comm. A zombie (exited, its parent not yet reaping it) holds nothing
// but its PID and is not counted.
func (e *env) procs(comm string) []int {
	var out []int
	for _, p := range e.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); strings.Contains(string(st), ") Z ") {
			continue
		}
		out = append(out, p)
	}
	return out
}

// cmd returns the CLI command `banger args...` inside the namespace.
func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", e.ns, filepath.Join(e.bin, "banger")}, args...)
	c := exec.CommandContext(ctx, "ip", full...)
	c.Env = append(os.Environ(),
		"BANGER_HOME="+e.home,
		"BANGERD_BIN="+filepath.Join(e.bin, "bangerd"),
		"BANGER_AGENT_BIN="+filepath.Join(e.bin, "banger-agent"),
		"BANGER_WARM_START="+strconv.FormatBool(e.warm),
	)
	c.Env = append(c.Env, e.extra...)
	return c
}

// result is what a CLI call did.
type result struct {
	stdout, stderr string
	code           int
}

// banger runs the CLI and returns its output and exit code.
func (e *env) banger(args ...string) result {
	e.t.Helper()
	return e.bangerIn(nil, args...)
}

func (e *env) bangerIn(stdin []byte, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	err := c.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("banger %v: %v", args, err)
	}
	return r
}

// ok runs the CLI and fails the test unless it exits 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.banger(args...)
	if r.code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI, expects a non-zero exit, and returns stderr.
func (e *env) fails(args ...string) string {
	e.t.Helper()
	r := e.banger(args...)
	if r.code == 0 {
		e.t.Fatalf("banger %s succeeded, want failure\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		e.t.Fatalf("banger %s printed a Go stack trace:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r.stderr
}

func (e *env) daemonPID() int {
	e.t.Helper()
	var v struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(e.ok("daemon", "status", "--json")), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.PID
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func mustContain(t testing.TB, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}
