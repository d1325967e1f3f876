// Package workspace decides which host files make up a workspace, streams
// them as a tar for the guest, brings a guest directory back safely, and
// writes the guest-side scripts that check out refs and bootstrap tools.
//
// A git repository's workspace is exactly what `git ls-files -co
// --exclude-standard` lists (tracked plus untracked, minus ignored files)
// plus the whole .git directory. A directory that is not a git repository
// is taken as it is, every file under it.
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
	"sort"
	"strings"
)

// Set is the files of one workspace.
type Set struct {
	Root  string   // absolute host directory
	Name  string   // base name of Root: the guest directory's name
	Git   bool     // Root is the top of a git work tree
	Files []string // slash-separated paths relative to Root, sorted
}

// Collect lists the workspace under root. A missing root or one that is
// not a directory is an error that names it.
func Collect(ctx context.Context, root string) (Set, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return Set{}, err
	}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return Set{}, fmt.Errorf("workspace %s does not exist", root)
	}
	if err != nil {
		return Set{}, fmt.Errorf("workspace %s: %w", root, err)
	}
	if !st.IsDir() {
		return Set{}, fmt.Errorf("workspace %s is not a directory", root)
	}
	s := Set{Root: abs, Name: filepath.Base(abs)}
	if fi, lerr := os.Lstat(filepath.Join(abs, ".git")); lerr == nil && fi.IsDir() {
		s.Git = true
		s.Files, err = gitFiles(ctx, abs)
	} else {
		s.Files, err = walk(abs, ".")
	}
	if err != nil {
		return Set{}, err
	}
	sort.Strings(s.Files)
	return s, nil
}

// gitFiles is git's list of tracked and untracked, not ignored files,
// plus everything under .git. Tracked files deleted from the work tree
// are left out.
func gitFiles(ctx context.Context, root string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "git", "-c", "safe.directory=*", "-C", root,
		"ls-files", "-z", "--cached", "--others", "--exclude-standard")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("listing workspace %s: git is not installed", root)
		}
		return nil, fmt.Errorf("listing workspace %s: git ls-files: %w: %s", root, err, bytes.TrimSpace(stderr.Bytes()))
	}
	seen := map[string]bool{}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" || seen[f] {
			continue // ls-files repeats paths with merge conflicts
		}
		seen[f] = true
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(f)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			return nil, fmt.Errorf("workspace file %s: %w", f, err)
		}
		if fi.IsDir() {
			// A submodule or nested repository: take it whole.
			sub, err := walk(root, f)
			if err != nil {
				return nil, err
			}
			files = append(files, sub...)
			continue
		}
		files = append(files, f)
	}
	gitDir, err := walk(root, ".git")
	if err != nil {
		return nil, err
	}
	return append(files, gitDir...), nil
}

// walk lists rel (relative to root) and everything under it, without
// following symlinks. Directories are listed too, so empty ones survive.
func walk(root, rel string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(filepath.Join(root, rel), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p != filepath.Join(root, rel) {
			return nil // removed while we walk (e.g. by git gc)
		}
		if err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
		r, _ := filepath.Rel(root, p)
		if r != "." {
			out = append(out, filepath.ToSlash(r))
		}
		return nil
	})
	return out, err
}

// CheckReadable opens every regular file of the set once, so a file that
// cannot be read is reported by name before anything is created.
func (s Set) CheckReadable() error {
	for _, rel := range s.Files {
		p := filepath.Join(s.Root, filepath.FromSlash(rel))
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("workspace file %s: %w", rel, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("workspace file %s cannot be read: %w", rel, unwrapPath(err))
		}
		f.Close()
	}
	return nil
}
