package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"
)

// Command mode exits with the guest command's status, 127 for a missing
// command; --rm removes the VM; bad input names what is wrong and leaves
// nothing behind.
func TestRunCommandAndBadInput(t *testing.T) {
	e := bootEnv(t)
	start := time.Now()
	r := e.banger("vm", "run", "--image", "fixture", "--name", "r1", "--", "sh", "-c", "echo out; echo err >&2; exit 42")
	t.Logf("vm run -- sh -c 'exit 42': %s", time.Since(start).Round(time.Millisecond))
	if r.code != 42 || r.stdout != "out\n" || !strings.Contains(r.stderr, "err\n") {
		t.Fatalf("vm run: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if v := e.inspect("r1"); v.State != "running" {
		t.Fatalf("without --rm the VM is kept running, got %+v", v)
	}
	mustContain(t, "name taken", e.fails("vm", "run", "--image", "fixture", "--name", "r1", "--", "true"), "r1", "taken")
	mustContain(t, "unknown image", e.fails("vm", "run", "--image", "nope", "--", "true"), `"nope"`, "fixture")
	mustContain(t, "missing PATH", e.fails("vm", "run", "--image", "fixture", "./no-such-dir", "--", "true"), "no-such-dir", "does not exist")
	mustContain(t, "branch without PATH", e.fails("vm", "run", "--image", "fixture", "--branch", "x"), "PATH")

	r = e.banger("vm", "run", "--image", "fixture", "--name", "r2", "--rm", "--", "no-such-command")
	if r.code != 127 {
		t.Fatalf("missing command: exit %d, want 127; stderr %q", r.code, r.stderr)
	}
	out := e.ok("vm", "list", "--json")
	var vms []vmInfo
	json.Unmarshal([]byte(out), &vms)
	if len(vms) != 1 || vms[0].Name != "r1" {
		t.Fatalf("after the failures and --rm only r1 should exist: %s", out)
	}
	if n := len(e.procs("qemu-system-x86")); n != 1 {
		t.Fatalf("%d qemu processes, want 1 (r1)", n)
	}
}

// fixtureRepo makes a git repository under dir/name with tracked,
// untracked and ignored files, a symlink, an executable script and a file
// named with spaces and unicode, and returns its path.
func fixtureRepo(t *testing.T, dir, name string) string {
	t.Helper()
	repo := filepath.Join(dir, name)
	files := map[string]string{
		"README.md":           "hello\n",
		".gitignore":          "*.log\nbuild/\n",
		"src/main.c":          "int main(void) { return 0; }\n",
		"run.sh":              "#!/bin/sh\necho script-ran \"$(cat 'naïve file ü.txt')\"\n",
		"naïve file ü.txt":    "unicode\n",
		"untracked.txt":       "new\n",
		"debug.log":           "ignored\n",
		"build/out.bin":       "ignored\n",
		"docs/spaced name.md": "doc\n",
		".tool-versions":      "",
	}
	for n, data := range files {
		p := filepath.Join(repo, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(repo, "run.sh"), 0o755)
	os.Symlink("README.md", filepath.Join(repo, "link"))
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", "README.md", ".gitignore", "src", "run.sh", "naïve file ü.txt", "link", "docs", ".tool-versions")
	git(t, repo, "commit", "-qm", "first")
	git(t, repo, "tag", "v1")
	os.WriteFile(filepath.Join(repo, "README.md"), []byte("hello again\n"), 0o644)
	git(t, repo, "commit", "-qam", "second")
	return repo
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Workspace mode copies exactly git's file set plus .git, keeps the
// script executable and the symlink a symlink; export brings changes back;
// vm ssh reaches the VM through the pinned host key and refuses a changed
// one.
func TestRunWorkspaceExportAndSSH(t *testing.T) {
	e := bootEnv(t)
	repo := fixtureRepo(t, t.TempDir(), "fixture-repo")
	var want []string
	for _, f := range strings.Split(git(t, repo, "ls-files", "-z", "-co", "--exclude-standard"), "\x00") {
		if f != "" {
			want = append(want, "./"+f)
		}
	}
	sort.Strings(want)
	list := `find . -path ./.git -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort; test -f .git/HEAD && echo has-git; ` +
		`test -L link && echo link-is-symlink; ./run.sh; pwd`
	r := e.banger("vm", "run", "--image", "fixture", "--name", "ws", repo, "--", "sh", "-c", list)
	if r.code != 0 {
		t.Fatalf("vm run workspace: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "./") {
			got = append(got, l)
		}
	}
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("guest files vs git ls-files (-want +got):\n%s", diff)
	}
	mustContain(t, "guest output", r.stdout, "has-git", "link-is-symlink", "script-ran unicode", "/root/fixture-repo")

	// .tool-versions started the best-effort mise bootstrap in the
	// background (it cannot download mise here, which must not matter).
	var toolLog string
	for i := 0; i < 50 && !strings.Contains(toolLog, "tooling bootstrap"); i++ {
		toolLog = e.banger("vm", "exec", "ws", "--", "cat", "/root/.cache/banger/vm-run-tooling-fixture-repo.log").stdout
		time.Sleep(200 * time.Millisecond)
	}
	mustContain(t, "tooling log", toolLog, "tooling bootstrap of /root/fixture-repo started")

	// Export: a change made in the guest comes back; nothing escapes DIR.
	e.ok("vm", "exec", "ws", "--", "sh", "-c", "echo changed > /root/fixture-repo/new-in-guest.txt")
	out := filepath.Join(t.TempDir(), "out")
	e.ok("vm", "workspace", "export", "ws", "--guest-path", "/root/fixture-repo", "-o", out)
	if b, err := os.ReadFile(filepath.Join(out, "new-in-guest.txt")); err != nil || string(b) != "changed\n" {
		t.Fatalf("exported file: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(out, "run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("exported run.sh lost its exec bit: %v %v", fi, err)
	}
	mustContain(t, "export of a missing dir", e.fails("vm", "workspace", "export", "ws", "--guest-path", "/nope", "-o", out), "/nope")

	// prepare copies into a running VM at a chosen path.
	e.ok("vm", "workspace", "prepare", "ws", repo, "--guest-path", "/srv/copy")
	if got := e.ok("vm", "exec", "ws", "--", "cat", "/srv/copy/naïve file ü.txt"); got != "unicode\n" {
		t.Fatalf("prepared copy: %q", got)
	}

	// The same through the guest agent, as for a guest without sshd.
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer acancel()
	ac := e.cmd(actx, "vm", "workspace", "prepare", "ws", repo, "--guest-path", "/srv/via-agent")
	ac.Env = append(ac.Env, "BANGER_WORKSPACE_VIA=agent")
	if out, err := ac.CombinedOutput(); err != nil {
		t.Fatalf("workspace prepare via the agent: %v\n%s", err, out)
	}
	if got := e.ok("vm", "exec", "ws", "--", "sh", "-c", "cd /srv/via-agent && ./run.sh && stat -c %U link"); got != "script-ran unicode\nroot\n" {
		t.Fatalf("copy via the agent: %q", got)
	}

	// ssh: key login through the pinned host key, no prompt.
	if got := e.ok("vm", "ssh", "ws", "--", "echo", "via-ssh"); got != "via-ssh\n" {
		t.Fatalf("vm ssh: %q", got)
	}
	sshd := e.ok("vm", "exec", "ws", "--", "sh", "-c", "sshd -T | grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '")
	mustContain(t, "sshd -T", sshd, "passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin without-password")
	// A changed host key is refused.
	e.ok("vm", "exec", "ws", "--", "sh", "-c",
		"rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh")
	mustContain(t, "vm ssh with a changed host key", e.fails("vm", "ssh", "ws", "--", "true"), "refusing", "host key")
	// The system ssh with banger's known_hosts refuses it as well.
	sshDir := filepath.Join(e.home, "config", "ssh")
	out2, err := exec.Command("ip", "netns", "exec", e.ns, "ssh", "-i", filepath.Join(sshDir, "id_ed25519"),
		"-o", "UserKnownHostsFile="+filepath.Join(sshDir, "known_hosts"), "-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "BatchMode=yes", "root@"+e.inspect("ws").IP, "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "IDENTIFICATION HAS CHANGED") {
		t.Fatalf("ssh with a changed host key: %v\n%s", err, out2)
	}
}

// --from checks out a ref and --branch creates a branch from it. Both need
// git in the guest.
func TestRunBranchFrom(t *testing.T) {
	e := bootEnv(t)
	repo := fixtureRepo(t, t.TempDir(), "bf")
	r := e.banger("vm", "run", "--image", "fixture", "--name", "bf", "--from", "v1", "--branch", "feature", repo, "--",
		"sh", "-c", "git rev-parse --abbrev-ref HEAD; cat README.md")
	if r.code != 0 && strings.Contains(r.stderr, "git is not installed") {
		t.Fatalf("the fixture image has no git, although scripts/fixtures.sh installs it: the fixture is stale, run make fixtures (it rebuilds fixtures whose recipe changed)\n%s", r.stderr)
	}
	if r.code != 0 || r.stdout != "feature\nhello\n" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// An interactive vm run gets a shell prompt over ssh; exit leaves the VM
// running and the last line says how to get back in and clean up.
func TestRunInteractive(t *testing.T) {
	e := bootEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "vm", "run", "--image", "fixture", "--name", "tty1")
	tty, err := pty.StartWithSize(c, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(what string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			mu.Lock()
			s := out.String()
			mu.Unlock()
			if strings.Contains(s, what) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no %q within %s; output:\n%s", what, d, out.String())
	}
	waitFor("root@tty1", 2*time.Minute)
	fmt.Fprint(tty, "echo answer-$((40+2))\r")
	waitFor("answer-42", 30*time.Second)
	fmt.Fprint(tty, "exit\r")
	waitFor("banger vm delete tty1", 30*time.Second)
	if err := c.Wait(); err != nil {
		t.Fatalf("vm run after exit: %v", err)
	}
	mustContain(t, "last line", out.String(), "banger vm ssh tty1")
	if v := e.inspect("tty1"); v.State != "running" {
		t.Fatalf("after exit the VM should still run: %+v", v)
	}
}

// A guest whose sshd never starts fails the bare run within the ready
// timeout, with an error that says where to look and that the VM is kept.
func TestRunSSHDNeverStarts(t *testing.T) {
	e := bootEnv(t)
	img := filepath.Join(t.TempDir(), "nosshd.ext4")
	run(t, "cp", "--sparse=always", filepath.Join(fixtures(t), "rootfs.ext4"), img)
	run(t, "debugfs", "-w", "-R", "rm /usr/sbin/sshd", img)
	e.ok("image", "register", "--name", "nosshd", "--rootfs", img, "--kernel-ref", "generic-6.1")
	start := time.Now()
	msg := e.fails("vm", "run", "--image", "nosshd", "--name", "nos", "--ready-timeout", "40")
	took := time.Since(start)
	t.Logf("error:\n%s", msg)
	mustContain(t, "timeout error", msg, `"nos"`, "sshd", "banger vm logs nos", "banger vm delete nos", "still running")
	if took > 90*time.Second {
		t.Fatalf("the wait took %s, want it bounded by --ready-timeout 40", took)
	}
	if v := e.inspect("nos"); v.State != "running" {
		t.Fatalf("the VM should be kept for inspection: %+v", v)
	}
}

// Four vm runs at once all succeed.
func TestRunParallel(t *testing.T) {
	e := bootEnv(t)
	e.ok("daemon", "start")
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]string, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := e.cmd(ctx, "vm", "run", "--image", "fixture", "--memory", "512M", "--rm", "--", "true").CombinedOutput()
			if err != nil {
				errs[i] = fmt.Sprintf("run %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	t.Logf("4 parallel vm run -- true: %s", time.Since(start).Round(time.Millisecond))
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	if n := len(e.procs("qemu-system-x86")); n != 0 {
		t.Fatalf("%d qemu processes left after --rm", n)
	}
}

// The daemon dying in the middle of a vm run fails the run with a clear
// message and leaves no half-made VM: after the restart the VM is either
// running (re-adopted) or shown as failed, and deleting it leaves nothing.
func TestRunDaemonDies(t *testing.T) {
	e := bootEnv(t)
	e.ok("daemon", "start")
	pid := e.daemonPID()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "vm", "run", "--image", "fixture", "--name", "dd", "--", "true")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the vm's qemu starting", func() bool { return len(e.procs("qemu-system-x86")) > 0 })
	syscall.Kill(pid, syscall.SIGKILL)
	if err := c.Wait(); err == nil {
		t.Fatal("vm run succeeded although its daemon died")
	}
	if strings.Contains(stderr.String(), "goroutine ") {
		t.Fatalf("stack trace:\n%s", stderr.String())
	}
	t.Logf("vm run when the daemon died: %s", strings.TrimSpace(stderr.String()))
	mustContain(t, "vm run when the daemon died", stderr.String(),
		"bangerd went away", "banger vm list", filepath.Join(e.home, "state", "bangerd.log"))
	if n := strings.Count(stderr.String(), "\nbanger: "); n > 1 {
		t.Errorf("%d error lines, want one clear message:\n%s", n, stderr.String())
	}
	var vms []vmInfo
	json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &vms)
	for _, v := range vms {
		if v.State == "creating" {
			t.Fatalf("half-created vm left: %+v", v)
		}
	}
	for _, v := range vms {
		e.ok("vm", "delete", "--force", v.Name)
	}
	checkNoLeaks(t, e, 2)
	if n := len(e.procs("qemu-system-x86")); n != 0 {
		t.Fatalf("%d qemu processes left", n)
	}
}
