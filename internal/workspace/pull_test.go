package workspace

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// guestCopy copies the host repo whole, .git included, as a workspace
// copy does, and returns the copy's directory.
func guestCopy(t *testing.T, host string) string {
	t.Helper()
	g := filepath.Join(t.TempDir(), filepath.Base(host))
	if out, err := exec.Command("cp", "-a", host, g).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return g
}

// runScript runs a guest script here, as the agent would there, with the
// host's commits on stdin (PullInput) and env instead of the test's git
// variables.
func runScript(t *testing.T, argv []string, input string, env []string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "GIT_") && k != "EMAIL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

var testIdentity = []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t"}

// hostLook is what a pull must leave alone in a repository.
type hostLook struct {
	Head, Branch, Status, Index, File string
}

func look(t *testing.T, dir string) hostLook {
	t.Helper()
	idx, _ := os.ReadFile(filepath.Join(dir, ".git", "index"))
	f, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	return hostLook{
		Head:   gitIn(t, dir, "rev-parse", "HEAD"),
		Branch: gitIn(t, dir, "symbolic-ref", "HEAD"),
		Status: gitIn(t, dir, "--no-optional-locks", "status", "--porcelain"),
		Index:  string(idx),
		File:   string(f),
	}
}

// pull runs the whole pull here, as the client does: inspect, then a
// bundle fetched into branch, or only the branch when the host has the
// commits already. base is the commit the copy started at.
func pull(t *testing.T, host Repo, guest, base, branch string, uncommitted, force bool, env []string) GuestRepo {
	t.Helper()
	ctx := context.Background()
	tips, err := host.Tips(ctx)
	if err != nil {
		t.Fatal(err)
	}
	input := PullInput(tips, []string{base})
	prev, err := host.Branch(ctx, branch)
	if err != nil {
		t.Fatal(err)
	}
	ref := PullRef("test")
	code, out, stderr := runScript(t, PullInspectArgv(guest, ref, uncommitted,
		GuestCommit{Message: "banger: uncommitted", Name: "fallback", Email: "fallback@host"}), input, env)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	g, err := ParseGuestRepo(out)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case g.New == 0:
	case g.Missing == 0:
		if err := host.SetBranch(ctx, branch, g.Tip, prev, "test"); err != nil {
			t.Fatal(err)
		}
	default:
		code, bundle, stderr := runScript(t, PullBundleArgv(guest, ref), input, env)
		if code != 0 {
			t.Fatalf("bundle: exit %d: %s", code, stderr)
		}
		file := filepath.Join(t.TempDir(), "b.bundle")
		os.WriteFile(file, []byte(bundle), 0o600)
		if err := host.FetchBundle(ctx, file, ref, branch, force); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// The guest's commits reach the host as a new branch with the same
// content, and the host's HEAD, index and work tree stay as they were;
// the guest's uncommitted changes are reported and, when asked, become
// one extra commit without changing the guest's index or work tree.
func TestPullRoundTrip(t *testing.T) {
	ctx := context.Background()
	hostDir := fixtureRepo(t)
	os.WriteFile(filepath.Join(hostDir, "README.md"), []byte("host edit, not committed\n"), 0o644)
	guest := guestCopy(t, hostDir)
	gitIn(t, guest, "checkout", "-q", "--", "README.md")
	os.WriteFile(filepath.Join(guest, "src", "agent.go"), []byte("package main // by the agent\n"), 0o644)
	gitIn(t, guest, "add", "src/agent.go")
	gitIn(t, guest, "commit", "-qm", "agent: add agent.go")
	os.WriteFile(filepath.Join(guest, "README.md"), []byte("uncommitted in the guest\n"), 0o644)
	os.WriteFile(filepath.Join(guest, "scratch.txt"), []byte("untracked in the guest\n"), 0o644)

	host, err := OpenRepo(ctx, hostDir)
	if err != nil {
		t.Fatal(err)
	}
	before := look(t, hostDir)
	guestBefore := look(t, guest)
	base := strings.TrimSpace(before.Head)

	g := pull(t, host, guest, base, "banger/vm1", false, false, testIdentity)
	if g.New != 1 || g.Missing != 1 || g.Uncommitted() || g.Branch != strings.TrimSpace(gitIn(t, guest, "symbolic-ref", "--short", "HEAD")) {
		t.Fatalf("guest repo: %+v", g)
	}
	for _, want := range []string{" M README.md", "?? scratch.txt", "?? untracked.txt"} {
		if !contains(g.Status, want) {
			t.Errorf("status %q lacks %q", g.Status, want)
		}
	}
	if got, want := gitIn(t, hostDir, "rev-parse", "banger/vm1"), gitIn(t, guest, "rev-parse", "HEAD"); got != want {
		t.Fatalf("banger/vm1 is %s, the guest's HEAD %s", got, want)
	}
	if got := gitIn(t, hostDir, "show", "banger/vm1:src/agent.go"); got != "package main // by the agent\n" {
		t.Fatalf("pulled file: %q", got)
	}
	if diff := cmp.Diff(before, look(t, hostDir)); diff != "" {
		t.Fatalf("the pull changed the host repo (-before +after):\n%s", diff)
	}
	if refs := gitIn(t, guest, "for-each-ref", "refs/banger/"); refs != "" {
		t.Fatalf("the guest kept the pull's ref: %s", refs)
	}

	// Now with the uncommitted changes, made by a guest with no git
	// identity of its own: the fallback one is used.
	noIdentity := []string{"HOME=" + t.TempDir(), "GIT_CONFIG_NOSYSTEM=1"}
	g = pull(t, host, guest, base, "banger/vm1", true, true, noIdentity)
	if g.New != 2 || g.Missing != 1 || !g.Uncommitted() {
		t.Fatalf("with uncommitted: %+v (two beyond the base, one of them new to the host)", g)
	}
	if got := gitIn(t, hostDir, "show", "banger/vm1:README.md"); got != "uncommitted in the guest\n" {
		t.Fatalf("the extra commit's README.md: %q", got)
	}
	if got := gitIn(t, hostDir, "show", "banger/vm1:scratch.txt"); got != "untracked in the guest\n" {
		t.Fatalf("the extra commit's scratch.txt: %q", got)
	}
	if got := gitIn(t, hostDir, "log", "-1", "--format=%an <%ae> %P %s", "banger/vm1"); got != "fallback <fallback@host> "+g.Head+" banger: uncommitted\n" {
		t.Fatalf("the extra commit: %q", got)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "scratch.txt")); err == nil {
		t.Fatal("the pull wrote into the host's work tree")
	}
	if diff := cmp.Diff(before, look(t, hostDir)); diff != "" {
		t.Fatalf("the pull changed the host repo (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(guestBefore, look(t, guest)); diff != "" {
		t.Fatalf("the pull changed the guest's HEAD, index or files (-before +after):\n%s", diff)
	}
	if got := gitIn(t, guest, "status", "--porcelain"); !strings.Contains(got, " M README.md") || !strings.Contains(got, "?? scratch.txt") {
		t.Fatalf("the guest's changes are no longer uncommitted: %q", got)
	}

	// Into another branch: the host has the commits, only the branch is
	// made.
	if g := pull(t, host, guest, base, "banger/again", false, false, testIdentity); g.New != 1 || g.Missing != 0 {
		t.Fatalf("a second pull: %+v", g)
	}
	if got, want := gitIn(t, hostDir, "rev-parse", "banger/again"), gitIn(t, guest, "rev-parse", "HEAD"); got != want {
		t.Fatalf("banger/again is %s, the guest's HEAD %s", got, want)
	}

	// Nothing new: the guest's HEAD is the base.
	fresh := guestCopy(t, hostDir)
	if g := pull(t, host, fresh, base, "banger/none", false, false, testIdentity); g.New != 0 {
		t.Fatalf("a fresh copy has %d new commits", g.New)
	}
	if c, _ := host.Branch(ctx, "banger/none"); c != "" {
		t.Fatalf("a pull of nothing made a branch at %s", c)
	}
	if refs := gitIn(t, fresh, "for-each-ref", "refs/banger/"); refs != "" {
		t.Fatalf("a pull of nothing left a ref in the guest: %s", refs)
	}
}

// The guest scripts say what is wrong with the guest's repository, each
// with its own exit code, and leave nothing behind.
func TestPullGuestErrors(t *testing.T) {
	hostDir := fixtureRepo(t)
	plain := t.TempDir()
	unborn := t.TempDir()
	gitIn(t, unborn, "init", "-q")
	noGit := t.TempDir()
	os.Symlink("/bin/sh", filepath.Join(noGit, "sh"))
	cases := []struct {
		name, dir string
		env       []string
		code      int
		msg       string
	}{
		{"git missing", hostDir, []string{"PATH=" + noGit}, PullNoGit, "git is not installed in this guest"},
		{"no directory", filepath.Join(plain, "nope"), nil, PullNoDir, "does not exist in this guest"},
		{"not a repository", plain, []string{"GIT_CEILING_DIRECTORIES=" + filepath.Dir(plain)}, PullNotRepo, "is not a git repository in this guest"},
		{"no commits", unborn, nil, PullNoCommits, "has no commits in this guest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, argv := range [][]string{
				PullInspectArgv(c.dir, PullRef("x"), true, GuestCommit{Message: "m", Name: "n", Email: "e"}),
				PullBundleArgv(c.dir, PullRef("x")),
			} {
				if c.name == "no commits" && argv[len(argv)-1] == PullRef("x") {
					continue // the bundle step runs only after inspect found commits
				}
				argv[0] = "/bin/sh"
				code, out, stderr := runScript(t, argv, "", append(testIdentity, c.env...))
				if code != c.code || !strings.Contains(stderr, c.msg) || out != "" {
					t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, stderr, c.code, c.msg)
				}
			}
		})
	}
	if refs := gitIn(t, unborn, "for-each-ref"); refs != "" {
		t.Errorf("refs left behind: %s", refs)
	}
}

// A host path that is not a git repository, a bad branch name, an
// existing branch and a checked-out one are told apart.
func TestRepoChecks(t *testing.T) {
	ctx := context.Background()
	hostDir := fixtureRepo(t)
	plain := t.TempDir()
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(plain))
	if _, err := OpenRepo(ctx, plain); err == nil || !strings.Contains(err.Error(), "is not a git repository") {
		t.Errorf("OpenRepo(plain dir) = %v", err)
	}
	if _, err := OpenRepo(ctx, filepath.Join(plain, "nope")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("OpenRepo(missing) = %v", err)
	}
	r, err := OpenRepo(ctx, filepath.Join(hostDir, "src"))
	if err != nil {
		t.Fatalf("OpenRepo(a directory in the repo) = %v", err)
	}
	if r.GitDir != filepath.Join(hostDir, ".git") {
		t.Errorf("GitDir = %s", r.GitDir)
	}
	head := strings.TrimSpace(gitIn(t, hostDir, "rev-parse", "HEAD"))
	cur := strings.TrimSpace(gitIn(t, hostDir, "symbolic-ref", "--short", "HEAD"))
	gitIn(t, hostDir, "tag", "-a", "-m", "annotated", "v1")
	gitIn(t, hostDir, "branch", "banger/old")
	if c, err := r.Branch(ctx, "banger/old"); c != head || err != nil {
		t.Errorf("Branch(existing) = %q, %v", c, err)
	}
	if c, err := r.Branch(ctx, "banger/new"); c != "" || err != nil {
		t.Errorf("Branch(missing) = %q, %v", c, err)
	}
	for _, bad := range []string{"a..b", "-x", "has space", "end.lock", ""} {
		if _, err := r.Branch(ctx, bad); err == nil || !strings.Contains(err.Error(), "not a valid branch name") {
			t.Errorf("Branch(%q) = %v", bad, err)
		}
	}
	if w, err := r.CheckedOut(ctx, cur); w != hostDir || err != nil {
		t.Errorf("CheckedOut(%s) = %q, %v", cur, w, err)
	}
	if w, err := r.CheckedOut(ctx, "banger/old"); w != "" || err != nil {
		t.Errorf("CheckedOut(banger/old) = %q, %v", w, err)
	}
	tips, err := r.Tips(ctx)
	if err != nil || len(tips) != 1 || tips[0] != head {
		t.Errorf("Tips = %v, %v; want just %s (HEAD, both branches and the peeled tag)", tips, err, head)
	}
}

func TestParseGuestRepo(t *testing.T) {
	g, err := ParseGuestRepo("head a1\nbranch \ntip b2\nnew 3\nmissing 2\n M x\n?? y\n")
	want := GuestRepo{Head: "a1", Tip: "b2", New: 3, Missing: 2, Status: []string{" M x", "?? y"}}
	if err != nil || !cmp.Equal(g, want) {
		t.Fatalf("ParseGuestRepo = %+v, %v", g, err)
	}
	for _, bad := range []string{"", "head a\nbranch b\ntip c\n", "head a\nbranch b\ntip c\nnew x\nmissing 1\n", "nope a\nbranch b\ntip c\nnew 1\nmissing 1\n", "head a\nbranch b\ntip c\nnew 1\n"} {
		if _, err := ParseGuestRepo(bad); err == nil {
			t.Errorf("ParseGuestRepo(%q) took it", bad)
		}
	}
}
