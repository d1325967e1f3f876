package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Repo is a host git repository that work pulled from a guest goes into.
// Its methods run the host's git in Dir and never touch the work tree,
// the index or HEAD.
type Repo struct {
	Dir    string // absolute, as given
	GitDir string // absolute
}

// OpenRepo checks that dir is a git repository (its top, a directory in
// it, or a bare one) and returns it. The errors say what to do.
func OpenRepo(ctx context.Context, dir string) (Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Repo{}, err
	}
	if st, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return Repo{}, fmt.Errorf("%s does not exist: give the host git repository to pull into", dir)
	} else if err != nil {
		return Repo{}, err
	} else if !st.IsDir() {
		return Repo{}, fmt.Errorf("%s is not a directory: give the host git repository to pull into", dir)
	}
	r := Repo{Dir: abs}
	gd, err := r.git(ctx, "rev-parse", "--absolute-git-dir")
	if errors.Is(err, exec.ErrNotFound) {
		return Repo{}, fmt.Errorf("git is not installed on this host: install it to pull (apt-get install git)")
	}
	if err != nil {
		return Repo{}, fmt.Errorf("%s is not a git repository (%v): pull fetches into a host git repository; give the one the VM's workspace came from, or git init one", dir, err)
	}
	r.GitDir = gd
	return r, nil
}

// git runs git in r.Dir and returns its output, trimmed. A failure
// carries git's stderr.
func (r Repo) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", r.Dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", err
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("git %s: %s", args[0], msg)
		}
		return "", fmt.Errorf("git %s: %w", args[0], err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Head is the branch checked out in dir ("" when detached) and the commit
// of HEAD ("" when there is none). Either is "" when dir is no git
// repository or git cannot tell.
func Head(ctx context.Context, dir string) (branch, commit string) {
	r := Repo{Dir: dir}
	branch, _ = r.git(ctx, "symbolic-ref", "-q", "--short", "HEAD")
	commit, _ = r.git(ctx, "rev-parse", "-q", "--verify", "HEAD^{commit}")
	return branch, commit
}

// Tips are the commits the repository's refs and HEAD point at (tags
// peeled), each once: what a guest need not send back.
func (r Repo) Tips(ctx context.Context) ([]string, error) {
	out, err := r.git(ctx, "for-each-ref", "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype)")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var tips []string
	add := func(c string) {
		if c != "" && !seen[c] {
			seen[c] = true
			tips = append(tips, c)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[1] == "commit":
			add(f[0])
		case len(f) == 4 && f[3] == "commit":
			add(f[2])
		}
	}
	if head, err := r.git(ctx, "rev-parse", "-q", "--verify", "HEAD^{commit}"); err == nil {
		add(head)
	}
	return tips, nil
}

// Branch is the commit the branch called name points at, "" when there is
// no such branch. A name git would not take as a branch is an error.
func (r Repo) Branch(ctx context.Context, name string) (string, error) {
	if _, err := r.git(ctx, "check-ref-format", "--branch", name); err != nil || strings.HasPrefix(name, "-") {
		return "", fmt.Errorf("%q is not a valid branch name: pick another with --branch", name)
	}
	c, err := r.git(ctx, "rev-parse", "-q", "--verify", "refs/heads/"+name+"^{commit}")
	if err != nil {
		return "", nil // rev-parse -q --verify fails quietly when it is missing
	}
	return c, nil
}

// CheckedOut is the work tree (the main one or a linked one) where the
// branch called name is checked out, "" when none.
func (r Repo) CheckedOut(ctx context.Context, name string) (string, error) {
	out, err := r.git(ctx, "worktree", "list", "--porcelain")
	if err != nil {
		return "", err
	}
	var tree string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "worktree "); ok {
			tree = v
		}
		if line == "branch refs/heads/"+name {
			return tree, nil
		}
	}
	return "", nil
}

// FetchBundle fetches ref from the bundle file into the branch called
// name. Without force it only creates the branch; with force it moves an
// existing one. The objects are checked as they come in (the bundle was
// made by a guest). The work tree, the index and HEAD stay as they are:
// git refuses to fetch into a branch that is checked out.
func (r Repo) FetchBundle(ctx context.Context, bundle, ref, name string, force bool) error {
	spec := ref + ":refs/heads/" + name
	if force {
		spec = "+" + spec
	}
	_, err := r.git(ctx, "-c", "transfer.fsckObjects=true", "-c", "maintenance.auto=false", "-c", "gc.auto=0",
		"fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", bundle, spec)
	if err != nil {
		return fmt.Errorf("fetching into branch %s of %s: %w", name, r.Dir, err)
	}
	return nil
}

// Config is the value of the git config key in the repository, "" when
// it is unset.
func (r Repo) Config(ctx context.Context, key string) string {
	v, _ := r.git(ctx, "config", "--get", key)
	return v
}

// SetBranch points the branch called name at commit, which the
// repository has, when it still points at prev ("": when it does not
// exist yet).
func (r Repo) SetBranch(ctx context.Context, name, commit, prev, why string) error {
	if _, err := r.git(ctx, "update-ref", "-m", why, "refs/heads/"+name, commit, prev); err != nil {
		return fmt.Errorf("setting branch %s of %s: %w", name, r.Dir, err)
	}
	return nil
}

// PullInput is what the guest's pull scripts read on stdin: the host's
// tips, and the commits that make up the base marked as such.
func PullInput(tips, base []string) string {
	var b strings.Builder
	for _, c := range tips {
		b.WriteString(c + "\n")
	}
	for _, c := range base {
		b.WriteString(c + " base\n")
	}
	return b.String()
}
