package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hostRepoState is what a workspace pull must leave alone in the host
// repository.
type hostRepoState struct {
	Head, Branch, Status, Index, Readme string
}

func repoState(t *testing.T, repo string) hostRepoState {
	t.Helper()
	idx, err := os.ReadFile(filepath.Join(repo, ".git", "index"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return hostRepoState{
		Head:   git(t, repo, "rev-parse", "HEAD"),
		Branch: git(t, repo, "symbolic-ref", "HEAD"),
		Status: git(t, repo, "--no-optional-locks", "status", "--porcelain"),
		Index:  string(idx),
		Readme: string(readme),
	}
}

type workspaceSource struct {
	HostPath  string `json:"host_path"`
	GuestPath string `json:"guest_path"`
	Branch    string `json:"branch"`
	Commit    string `json:"commit"`
}

func (e *env) workspaceOf(vm string) *workspaceSource {
	e.t.Helper()
	var v struct{ Workspace *workspaceSource }
	if err := json.Unmarshal([]byte(e.ok("vm", "inspect", vm)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.Workspace
}

// A stand-in agent commits in the guest's copy of the repo; vm workspace
// pull brings that commit to the host repo as banger/<vm> with the same
// content, and the host's checked-out branch, index and work tree stay
// as they were. --include-uncommitted adds the guest's uncommitted edit
// as one more commit; an existing branch is refused, then moved with
// --force. vm inspect shows where the workspace came from. Every bad
// input says what to do and makes nothing.
func TestWorkspacePull(t *testing.T) {
	e := bootEnv(t)
	repo := fixtureRepo(t, t.TempDir(), "pullrepo")
	// The host is mid-work: an edit not committed, an untracked file.
	os.WriteFile(filepath.Join(repo, "README.md"), []byte("host edit in progress\n"), 0o644)
	hostHead := strings.TrimSpace(git(t, repo, "rev-parse", "HEAD"))

	e.ok("vm", "create", "--image", "fixture", "--name", "bare", "--no-start")
	mustContain(t, "unknown vm", e.fails("vm", "workspace", "pull", "nope", repo), `nope does not exist`, "bare")
	mustContain(t, "no workspace, no PATH", e.fails("vm", "workspace", "pull", "bare"), "no workspace recorded", "PATH")
	notRepo := t.TempDir()
	mustContain(t, "PATH not a repo", e.fails("vm", "workspace", "pull", "bare", notRepo), notRepo, "not a git repository")

	if r := e.banger("vm", "run", "--image", "fixture", "--name", "pw", repo, "--", "true"); r.code != 0 {
		t.Fatalf("vm run: exit %d\n%s", r.code, r.stderr)
	}
	want := &workspaceSource{HostPath: repo, GuestPath: "/root/pullrepo", Branch: "main", Commit: hostHead}
	if diff := cmp.Diff(want, e.workspaceOf("pw")); diff != "" {
		t.Fatalf("vm inspect's workspace (-want +got):\n%s", diff)
	}
	mustContain(t, "nothing committed yet", e.fails("vm", "workspace", "pull", "pw"), "no commits", "nothing pulled", "--include-uncommitted")
	if out := git(t, repo, "branch", "--list", "banger/*"); out != "" {
		t.Fatalf("a pull of nothing made a branch: %s", out)
	}

	// The stand-in agent: edits and commits, then leaves an edit
	// uncommitted.
	e.ok("vm", "exec", "pw", "--", "sh", "-c", `set -e; cd /root/pullrepo
git config user.name agent; git config user.email agent@guest
echo 'by the agent' > agent.txt; git add agent.txt; git commit -qm 'agent: add agent.txt'
echo '/* uncommitted */' >> src/main.c`)
	guestHead := e.ok("vm", "exec", "pw", "--", "git", "-C", "/root/pullrepo", "rev-parse", "HEAD")
	guestStatus := e.ok("vm", "exec", "pw", "--", "git", "-C", "/root/pullrepo", "status", "--porcelain")

	before := repoState(t, repo)
	start := time.Now()
	r := e.banger("vm", "workspace", "pull", "pw")
	t.Logf("vm workspace pull (1 commit): %s", time.Since(start).Round(time.Millisecond))
	if r.code != 0 {
		t.Fatalf("pull: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "pull's report", r.stdout, "banger/pw", "1 commit(s)")
	mustContain(t, "uncommitted changes reported", r.stderr, "uncommitted", "src/main.c", "--include-uncommitted")
	if got := git(t, repo, "rev-parse", "banger/pw"); got != guestHead {
		t.Fatalf("banger/pw is %s, the guest's HEAD %s", got, guestHead)
	}
	if got := git(t, repo, "show", "banger/pw:agent.txt"); got != "by the agent\n" {
		t.Fatalf("agent.txt on banger/pw: %q", got)
	}
	if got := git(t, repo, "log", "-1", "--format=%an %s", "banger/pw"); got != "agent agent: add agent.txt\n" {
		t.Fatalf("the pulled commit: %q", got)
	}
	if diff := cmp.Diff(before, repoState(t, repo)); diff != "" {
		t.Fatalf("the pull changed the host's HEAD, index or work tree (-before +after):\n%s", diff)
	}

	// The branch exists now: refused, unmoved; --force moves it.
	mustContain(t, "existing branch", e.fails("vm", "workspace", "pull", "pw", "--include-uncommitted"), "banger/pw already exists", "--force")
	if got := git(t, repo, "rev-parse", "banger/pw"); got != guestHead {
		t.Fatalf("a refused pull moved banger/pw to %s", got)
	}
	mustContain(t, "checked-out branch", e.fails("vm", "workspace", "pull", "pw", "--branch", "main", "--force"), "main is checked out", "--branch")
	r = e.banger("vm", "workspace", "pull", "pw", "--force", "--include-uncommitted")
	if r.code != 0 {
		t.Fatalf("pull --force --include-uncommitted: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "forced pull's report", r.stdout, "moved from", "uncommitted")
	if got := git(t, repo, "rev-parse", "banger/pw^"); got != guestHead {
		t.Fatalf("the uncommitted changes' commit sits on %s, want the guest's HEAD %s", got, guestHead)
	}
	if got := git(t, repo, "show", "banger/pw:src/main.c"); !strings.Contains(got, "/* uncommitted */") {
		t.Fatalf("src/main.c on banger/pw lacks the uncommitted edit: %q", got)
	}
	if diff := cmp.Diff(before, repoState(t, repo)); diff != "" {
		t.Fatalf("the pull changed the host's HEAD, index or work tree (-before +after):\n%s", diff)
	}
	if got := e.ok("vm", "exec", "pw", "--", "git", "-C", "/root/pullrepo", "rev-parse", "HEAD"); got != guestHead {
		t.Fatalf("the pull moved the guest's HEAD to %s", got)
	}
	if got := e.ok("vm", "exec", "pw", "--", "git", "-C", "/root/pullrepo", "status", "--porcelain"); got != guestStatus {
		t.Fatalf("the guest's uncommitted changes changed:\nbefore:\n%s\nafter:\n%s", guestStatus, got)
	}

	// An explicit PATH and branch: the host has the commit already, so
	// only the branch is made.
	e.ok("vm", "workspace", "pull", "pw", repo, "--branch", "agent-work")
	if got := git(t, repo, "rev-parse", "agent-work"); got != guestHead {
		t.Fatalf("agent-work is %s, the guest's HEAD %s", got, guestHead)
	}

	// workspace prepare records its copy too.
	e.ok("vm", "workspace", "prepare", "pw", repo, "--guest-path", "/srv/copy")
	if got := e.workspaceOf("pw"); got == nil || got.GuestPath != "/srv/copy" || got.HostPath != repo {
		t.Fatalf("after workspace prepare: %+v", got)
	}

	e.ok("vm", "exec", "pw", "--", "mv", "/usr/bin/git", "/usr/bin/git.off")
	mustContain(t, "git missing in the guest", e.fails("vm", "workspace", "pull", "pw", "--branch", "x"), "git is not installed in vm pw", "install")
	if out := git(t, repo, "branch", "--list", "x"); out != "" {
		t.Fatalf("failed pulls made branches: %s", out)
	}
}
