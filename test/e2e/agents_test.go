package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// credUser is a real host user made for one test, whose home is a test
// directory: the user who "ran sudo".
func credUser(t *testing.T, home string) (name string, uid, gid int) {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name = "bgcred" + hex.EncodeToString(b)
	run(t, "useradd", "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", "--user-group", name)
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return name, uid, gid
}

// writeOwned writes a file (and its missing parents) owned by uid:gid.
func writeOwned(t *testing.T, p, content string, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// The daemon runs as root for a user who ran sudo (SUDO_USER and friends
// set, HOME elsewhere): at every start, that user's credential files that
// exist reach the guest with their contents, 0600 and root's; an absent
// one is not created; one the user cannot read is a warning and the VM
// starts; a change on the host shows at the next start; vm run syncs too;
// inspect lists the guest paths; no content is in any log or state file.
func TestCredentialSync(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	// Like /home: its user can reach it.
	os.Chmod(filepath.Dir(filepath.Dir(home)), 0o755)
	os.Chmod(filepath.Dir(home), 0o755)
	os.MkdirAll(home, 0o755)
	name, uid, gid := credUser(t, home)
	os.Chown(home, uid, gid)
	// sudo's HOME is root's: a decoy there must not be what is synced.
	decoy := t.TempDir()
	writeOwned(t, filepath.Join(decoy, ".claude/.credentials.json"), "decoy-home-secret", 0o600, 0, 0)
	t.Setenv("HOME", decoy)
	t.Setenv("SUDO_USER", name)
	t.Setenv("SUDO_UID", strconv.Itoa(uid))
	t.Setenv("SUDO_GID", strconv.Itoa(gid))

	secret := func(what string) string {
		b := make([]byte, 8)
		rand.Read(b)
		return "e2e-secret-" + what + "-" + hex.EncodeToString(b)
	}
	oc, cl, cl2, locked := secret("opencode"), secret("claude"), secret("claude2"), secret("locked")
	writeOwned(t, filepath.Join(home, ".local/share/opencode/auth.json"), `{"token":"`+oc+`"}`, 0o600, uid, gid)
	writeOwned(t, filepath.Join(home, ".claude/.credentials.json"), `{"token":"`+cl+`"}`, 0o600, uid, gid)
	// ~/.pi/agent/auth.json is absent. ~/.config/gh/hosts.yml is root's,
	// so its user cannot read it.
	writeOwned(t, filepath.Join(home, ".config/gh/hosts.yml"), locked, 0o600, 0, 0)
	for _, d := range []string{".local", ".local/share", ".local/share/opencode", ".claude", ".config", ".config/gh"} {
		os.Chown(filepath.Join(home, d), uid, gid)
	}

	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.home, "config"), 0o755)
	cfg := `credential_files = ["~/.local/share/opencode/auth.json", "~/.claude/.credentials.json", "~/.pi/agent/auth.json", "~/.config/gh/hosts.yml"]` + "\n"
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("kernel", "import", "--deb", fixtureDeb(t), "--name", "generic-6.1")
	e.ok("image", "register", "--name", "fixture", "--rootfs", filepath.Join(fixtures(t), "rootfs.ext4"), "--kernel-ref", "generic-6.1")

	r := e.banger("vm", "create", "--image", "fixture", "--name", "cred1", "--memory", "512M", "--cpus", "1")
	if r.code != 0 {
		t.Fatalf("vm create: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "create's stderr", r.stderr, "warning: credential file "+filepath.Join(home, ".config/gh/hosts.yml"),
		"permission denied", "started without it")
	guest := func(vm string, argv ...string) result {
		return e.banger(append([]string{"vm", "exec", vm, "--"}, argv...)...)
	}
	for p, want := range map[string]string{
		"/root/.local/share/opencode/auth.json": `{"token":"` + oc + `"}`,
		"/root/.claude/.credentials.json":       `{"token":"` + cl + `"}`,
	} {
		if got := guest("cred1", "cat", p); got.code != 0 || got.stdout != want {
			t.Errorf("guest %s: %q (exit %d), want %q", p, got.stdout, got.code, want)
		}
		if got := guest("cred1", "stat", "-c", "%a %u %g %F", p); strings.TrimSpace(got.stdout) != "600 0 0 regular file" {
			t.Errorf("guest %s: stat %q, want 600 root-owned", p, got.stdout)
		}
	}
	if got := guest("cred1", "stat", "-c", "%a", "/root/.claude"); strings.TrimSpace(got.stdout) != "700" {
		t.Errorf("guest /root/.claude made with mode %q, want 700", got.stdout)
	}
	for _, p := range []string{"/root/.pi", "/root/.config/gh/hosts.yml"} {
		if got := guest("cred1", "test", "-e", p); got.code == 0 {
			t.Errorf("guest %s exists; it was not synced", p)
		}
	}
	var v struct {
		State       string
		Credentials []string
		Warnings    []string
	}
	json.Unmarshal([]byte(e.ok("vm", "inspect", "cred1")), &v)
	if diff := cmp.Diff([]string{"/root/.local/share/opencode/auth.json", "/root/.claude/.credentials.json"}, v.Credentials); diff != "" || v.State != "running" {
		t.Errorf("inspect: state %s, credentials (-want +got):\n%s", v.State, diff)
	}
	if len(v.Warnings) != 1 || !strings.Contains(v.Warnings[0], "hosts.yml") {
		t.Errorf("inspect warnings %q, want the one for hosts.yml", v.Warnings)
	}

	// A change on the host reaches the guest at the next start.
	writeOwned(t, filepath.Join(home, ".claude/.credentials.json"), `{"token":"`+cl2+`"}`, 0o600, uid, gid)
	e.ok("vm", "stop", "cred1")
	e.ok("vm", "start", "cred1")
	if got := guest("cred1", "cat", "/root/.claude/.credentials.json"); got.stdout != `{"token":"`+cl2+`"}` {
		t.Errorf("after a restart the guest has %q, want the host's new content", got.stdout)
	}
	// vm run's first boot syncs too.
	r = e.banger("vm", "run", "--image", "fixture", "--name", "cred2", "--rm", "--", "cat", "/root/.local/share/opencode/auth.json")
	if r.code != 0 || r.stdout != `{"token":"`+oc+`"}` {
		t.Errorf("vm run: exit %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}

	// No content anywhere in banger's files but the guest's own disks.
	e.ok("vm", "stop", "cred1")
	grep := exec.Command("grep", "-rlaF", "--exclude=rootfs.ext4", "--exclude=*.qcow2", "-e", oc, "-e", cl, "-e", cl2, "-e", locked, "-e", "decoy-home-secret", e.home)
	out, err := grep.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("grep for credential contents under BANGER_HOME: %v, found in:\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	if !bytes.Contains(b, []byte("credential file not synced")) {
		t.Errorf("the daemon log does not warn about hosts.yml:\n%s", tail(string(b), 3000))
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "synced credential files") {
			t.Logf("bangerd.log: %s", line)
		}
	}
}

// fakeOpencode builds the stand-in opencode (testdata/fakeopencode), a
// static binary the fixture image can run without any runtime.
func fakeOpencode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "opencode")
	build := exec.Command("go", "build", "-o", bin, "./test/e2e/testdata/fakeopencode")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in opencode: %v\n%s", err, out)
	}
	return bin
}

// vm acp: without opencode it says how to install it and exits 127; with
// a stand-in opencode that echoes JSON-RPC, 1000 pipelined messages, ten
// of them 1 MiB, come back intact and in order, stderr is kept apart,
// opencode's exit status is banger's, and --cwd (default /root) is where
// it runs.
func TestACPBridge(t *testing.T) {
	e := bootEnv(t)
	e.ok("vm", "create", "--image", "fixture", "--name", "acp1", "--memory", "512M", "--cpus", "1")
	mustContain(t, "unknown vm", e.fails("vm", "acp", "nope"), `vm "nope" does not exist`, "banger vm list")

	r := e.bangerIn([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`+"\n"), "vm", "acp", "acp1")
	if r.code != 127 || r.stdout != "" {
		t.Fatalf("acp without opencode: exit %d stdout %q, want 127 and nothing", r.code, r.stdout)
	}
	mustContain(t, "missing opencode", r.stderr, "opencode is not installed in vm acp1", "not found",
		"banger vm exec acp1 -- sh -c 'curl -fsSL https://opencode.ai/install | bash'", "npm i -g opencode-ai")

	e.ok("vm", "cp", fakeOpencode(t), "acp1:/usr/local/bin/opencode")

	r = e.bangerIn([]byte(`{"id":1,"method":"cwd","params":{}}`+"\n"), "vm", "acp", "acp1")
	if r.code != 0 || r.stdout != `{"jsonrpc":"2.0","id":1,"result":"/root"}`+"\n" || !strings.Contains(r.stderr, "acp server ready") {
		t.Fatalf("acp cwd: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.bangerIn([]byte(`{"id":1,"method":"cwd","params":{}}`+"\n"), "vm", "acp", "acp1", "--cwd", "/tmp")
	if r.stdout != `{"jsonrpc":"2.0","id":1,"result":"/tmp"}`+"\n" {
		t.Errorf("acp --cwd /tmp: stdout %q", r.stdout)
	}

	const n, bigEvery = 1000, 100
	big := make([]byte, 3<<18) // 768 KiB of randomness: 1 MiB of base64
	var sent int64
	msgs := make([]string, n)
	for i := range msgs {
		var text string
		if i%bigEvery == 50 {
			rand.Read(big)
			text = base64.StdEncoding.EncodeToString(big)
		} else {
			text = fmt.Sprintf(`message %d: \"quoted\" tab\t unicode é ✓ \u2028 line`, i)
		}
		msgs[i] = fmt.Sprintf(`{"i":%d,"text":"%s"}`, i, text)
		sent += int64(len(msgs[i]))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "vm", "acp", "acp1")
	stdin, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	var stderr bytes.Buffer
	c.Stderr = &stderr
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w := bufio.NewWriter(stdin)
		for i, m := range msgs {
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%d,"method":"session/prompt","params":%s}`+"\n", i, m)
		}
		w.WriteString(`{"jsonrpc":"2.0","id":"bye","method":"exit","params":{"code":7}}` + "\n")
		w.Flush()
		stdin.Close()
	}()
	rd := bufio.NewReaderSize(stdout, 1<<20)
	for i := range msgs {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v (stderr %s)", i, err, stderr.String())
		}
		want := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":%s}`+"\n", i, msgs[i])
		if line != want {
			t.Fatalf("reply %d (%d bytes) is not the echo of request %d (%d bytes); starts %.80q", i, len(line), i, len(want), line)
		}
	}
	if rest, _ := io.ReadAll(rd); len(rest) != 0 {
		t.Errorf("%d bytes after the last reply: %.80q", len(rest), rest)
	}
	err := c.Wait()
	took := time.Since(start)
	t.Logf("vm acp: %d messages, %.1f MiB each way, round trip in %s (%.1f MiB/s each way)",
		n, float64(sent)/(1<<20), took.Round(time.Millisecond), float64(sent)/(1<<20)/took.Seconds())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("vm acp exited %v, want opencode's 7 (stderr %s)", err, stderr.String())
	}
	if strings.TrimSpace(stderr.String()) != "fakeopencode: acp server ready" {
		t.Errorf("stderr %q, want only opencode's own line", stderr.String())
	}
}
