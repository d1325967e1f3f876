package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/workspace"
)

// PullOptions says what PullWorkspace takes from a VM and where it goes.
type PullOptions struct {
	// Path is the host git repository; "" is the one the VM's workspace
	// came from.
	Path string
	// GuestPath is the repository in the guest; "" is where the
	// workspace was copied, else /root/<name of Path>.
	GuestPath string
	// Branch is the host branch the commits go into; "" is banger/<vm>.
	Branch string
	// Force moves Branch when it exists.
	Force bool
	// IncludeUncommitted adds the guest's uncommitted changes as one
	// more commit.
	IncludeUncommitted bool
}

// PullResult is what PullWorkspace did.
type PullResult struct {
	Repo      string `json:"repo"` // the host repository
	GuestPath string `json:"guest_path"`
	Branch    string `json:"branch"`             // the host branch
	Commit    string `json:"commit"`             // where Branch points now
	Previous  string `json:"previous,omitempty"` // where it pointed before (moved with Force)
	// Commits is how many commits came over, the extra one included.
	Commits     int    `json:"commits"`
	GuestBranch string `json:"guest_branch,omitempty"` // "" when the guest's HEAD is detached
	// Uncommitted are the guest's uncommitted changes (git status
	// --porcelain); IncludedUncommitted says they are Commit.
	Uncommitted         []string `json:"uncommitted,omitempty"`
	IncludedUncommitted bool     `json:"included_uncommitted"`
}

// PullWorkspace fetches the commits made in vm's copy of a repository
// into a branch of the host repository, without touching the host's work
// tree, index or HEAD: the guest's git bundles what the host lacks, and
// the host's git fetches that bundle into the branch. The guest's work
// tree, index and branches stay as they are. Nothing is made on the host
// when anything fails.
func (c *Client) PullWorkspace(ctx context.Context, vm string, o PullOptions) (PullResult, error) {
	v, err := c.VM(ctx, vm)
	if err != nil {
		return PullResult{}, c.unknownVM(ctx, vm, err)
	}
	if o.Path == "" {
		if v.Workspace == nil {
			return PullResult{}, fmt.Errorf("vm %s has no workspace recorded (it was not made with vm run PATH or vm workspace prepare): "+
				"give the host repository to pull into: banger vm workspace pull %s PATH [--guest-path DIR]", vm, vm)
		}
		o.Path = v.Workspace.HostPath
	}
	repo, err := workspace.OpenRepo(ctx, o.Path)
	if err != nil {
		return PullResult{}, err
	}
	res := PullResult{Repo: repo.Dir, GuestPath: o.GuestPath, Branch: o.Branch}
	if res.GuestPath == "" {
		res.GuestPath = defaultGuestPath(v, repo)
	}
	if res.Branch == "" {
		res.Branch = "banger/" + vm
	}
	if res.Previous, err = checkBranch(ctx, repo, res.Branch, o.Force); err != nil {
		return PullResult{}, err
	}
	tips, err := repo.Tips(ctx)
	if err != nil {
		return PullResult{}, err
	}
	var base []string
	if v.Workspace != nil && v.Workspace.Commit != "" {
		base = append(base, v.Workspace.Commit)
	}
	if _, head := workspace.Head(ctx, repo.Dir); head != "" {
		base = append(base, head)
	}
	input := workspace.PullInput(tips, base)
	ref := workspace.PullRef(pullNonce())
	g, err := c.inspectGuestRepo(ctx, vm, res.GuestPath, ref, input, o, repo)
	if err != nil {
		return PullResult{}, err
	}
	res.GuestBranch, res.Uncommitted, res.IncludedUncommitted, res.Commits = g.Branch, g.Status, g.Uncommitted(), g.New
	if g.New == 0 {
		msg := fmt.Sprintf("vm %s has no commits in %s beyond the commit its workspace started at (its HEAD is %s): nothing pulled, no branch made",
			vm, res.GuestPath, shortCommit(g.Head))
		if len(g.Status) > 0 {
			msg += fmt.Sprintf("; it has %d uncommitted change(s): commit them in the guest, or pass --include-uncommitted", len(g.Status))
		}
		return res, errors.New(msg)
	}
	if g.Missing == 0 {
		// The host has every commit already (an earlier pull): only the
		// branch is new.
		err = repo.SetBranch(ctx, res.Branch, g.Tip, res.Previous, "banger: vm workspace pull "+vm)
	} else {
		err = c.fetchGuestBundle(ctx, vm, res.GuestPath, ref, input, repo, res.Branch, o.Force)
	}
	if err != nil {
		return PullResult{}, err
	}
	res.Commit = g.Tip
	return res, nil
}

// unknownVM adds the names of the VMs there are to a not-found error.
func (c *Client) unknownVM(ctx context.Context, vm string, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.NotFound {
		return err
	}
	vms, lerr := c.ListVMs(ctx)
	if lerr != nil {
		return err
	}
	var names []string
	for _, v := range vms {
		names = append(names, v.Name)
	}
	if len(names) == 0 {
		return fmt.Errorf("vm %s does not exist, and there are no VMs (make one with banger vm run PATH)", vm)
	}
	return fmt.Errorf("vm %s does not exist; the VMs are: %s", vm, strings.Join(names, ", "))
}

// defaultGuestPath is where the workspace was copied, else
// /root/<name of the repository>.
func defaultGuestPath(v api.VM, repo workspace.Repo) string {
	if v.Workspace != nil && v.Workspace.GuestPath != "" {
		return v.Workspace.GuestPath
	}
	name := filepath.Base(repo.Dir)
	if filepath.Base(repo.GitDir) != ".git" {
		name = strings.TrimSuffix(filepath.Base(repo.GitDir), ".git") // a bare repository
	}
	return workspace.GuestDir(name)
}

// checkBranch refuses a branch that exists unless force, and one checked
// out anywhere, and returns the commit an existing branch points at.
func checkBranch(ctx context.Context, repo workspace.Repo, branch string, force bool) (string, error) {
	prev, err := repo.Branch(ctx, branch)
	if err != nil {
		return "", err
	}
	if prev == "" {
		return "", nil
	}
	if !force {
		return "", fmt.Errorf("branch %s already exists in %s (at %s): pass --force to move it, or pick another with --branch",
			branch, repo.Dir, shortCommit(prev))
	}
	tree, err := repo.CheckedOut(ctx, branch)
	if err != nil {
		return "", err
	}
	if tree != "" {
		return "", fmt.Errorf("branch %s is checked out in %s, and moving it would change that work tree: pick another with --branch, or check out another branch there",
			branch, tree)
	}
	return prev, nil
}

// inspectGuestRepo runs the guest's look at its repository (and makes the
// extra commit when asked) and reads what it found.
func (c *Client) inspectGuestRepo(ctx context.Context, vm, dir, ref, input string, o PullOptions, repo workspace.Repo) (workspace.GuestRepo, error) {
	name, email := hostIdentity(ctx, repo)
	commit := workspace.GuestCommit{Name: name, Email: email,
		Message: fmt.Sprintf("banger: uncommitted changes in vm %s\n\nTaken from the work tree of %s by banger vm workspace pull --include-uncommitted.", vm, dir)}
	var out strings.Builder
	var stderr limitedBuffer
	code, err := c.execPiped(ctx, vm, workspace.PullInspectArgv(dir, ref, o.IncludeUncommitted, commit), strings.NewReader(input), &out, &stderr)
	if err != nil {
		return workspace.GuestRepo{}, err
	}
	if code != 0 {
		return workspace.GuestRepo{}, guestGitError(vm, dir, code, stderr.String())
	}
	return workspace.ParseGuestRepo(out.String())
}

// fetchGuestBundle brings the guest's bundle of ref to a temporary file
// and fetches it into branch.
func (c *Client) fetchGuestBundle(ctx context.Context, vm, dir, ref, input string, repo workspace.Repo, branch string, force bool) error {
	f, err := os.CreateTemp("", "banger-pull-*.bundle")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := &firstErrWriter{w: f}
	var stderr limitedBuffer
	code, err := c.execPiped(ctx, vm, workspace.PullBundleArgv(dir, ref), strings.NewReader(input), w, &stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return guestGitError(vm, dir, code, stderr.String())
	}
	if w.err != nil {
		return fmt.Errorf("writing the bundle from vm %s to %s: %w", vm, f.Name(), w.err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return repo.FetchBundle(ctx, f.Name(), ref, branch, force)
}

// guestGitError says what a pull script's exit code means.
func guestGitError(vm, dir string, code int, stderr string) error {
	switch code {
	case workspace.PullNoGit:
		return fmt.Errorf("git is not installed in vm %s: install it there (e.g. banger vm exec %s -- apt-get install -y git) or use an image that has it", vm, vm)
	case workspace.PullNoDir:
		return fmt.Errorf("%s does not exist in vm %s: give the guest repository with --guest-path", dir, vm)
	case workspace.PullNotRepo:
		return fmt.Errorf("%s in vm %s is not a git repository: give the guest repository with --guest-path", dir, vm)
	case workspace.PullNoCommits:
		return fmt.Errorf("%s in vm %s has no commits yet: nothing to pull", dir, vm)
	}
	return fmt.Errorf("git in vm %s (%s) exited %d: %s", vm, dir, code, strings.TrimSpace(stderr))
}

// hostIdentity is the host repository's git identity, for the extra
// commit when the guest has none; banger's own when the host has none
// either.
func hostIdentity(ctx context.Context, repo workspace.Repo) (name, email string) {
	name, email = repo.Config(ctx, "user.name"), repo.Config(ctx, "user.email")
	if name == "" {
		name = "banger"
	}
	if email == "" {
		email = "banger@localhost"
	}
	return name, email
}

// execPiped runs argv in vm with stdin, and its output to stdout and
// stderr, and returns its exit code.
func (c *Client) execPiped(ctx context.Context, vm string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	e, err := c.OpenExec(ctx, vm, guest.ExecRequest{Argv: argv})
	if err != nil {
		return 0, err
	}
	defer e.Close()
	go e.CopyStdin(stdin)
	st, err := e.Wait(stdout, stderr)
	return st.Code, err
}

// firstErrWriter keeps the first write error, which Exec.Wait would drop.
type firstErrWriter struct {
	w   io.Writer
	err error
}

func (e *firstErrWriter) Write(p []byte) (int, error) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
	return len(p), nil
}

func pullNonce() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func shortCommit(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
