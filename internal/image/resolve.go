package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// resolveParent resolves the layer path entry inside the root: every
// component but the last is followed (symlinks resolved as if root were
// "/"), the last is not. It returns the real parent directory relative to
// the root ("" is the root) and the last component ("" for the root
// itself). Missing parents are created (0755, root-owned) when create is
// set, else it fails with fs.ErrNotExist. A path that would leave the
// root, by ".." or through a symlink, fails with ErrUnsafeEntry.
func (f *Flattener) resolveParent(entry string, create bool) (dir, name string, err error) {
	comps, err := splitEntry(entry)
	if err != nil {
		return "", "", err
	}
	if len(comps) == 0 {
		return "", "", nil
	}
	name = comps[len(comps)-1]
	var stack []string // resolved real components
	queue := comps[:len(comps)-1]
	links := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return "", "", fmt.Errorf("%w: %q goes above the root", ErrUnsafeEntry, entry)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		rel := join(strings.Join(stack, "/"), c)
		if f.dirs[rel] {
			stack = append(stack, c)
			continue
		}
		p := filepath.Join(f.root, rel)
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(p, 0o755); err != nil {
				return "", "", fmt.Errorf("entry %q: %w", entry, err)
			}
			f.dirs[rel] = true
			stack = append(stack, c)
		case err != nil:
			return "", "", fmt.Errorf("entry %q: %w", entry, err)
		case st.IsDir():
			f.dirs[rel] = true
			stack = append(stack, c)
		case st.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", "", fmt.Errorf("entry %q: too many levels of symlinks", entry)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return "", "", fmt.Errorf("entry %q: %w", entry, err)
			}
			if strings.HasPrefix(target, "/") {
				stack = nil
			}
			// A ".." above the root inside the link is an escape attempt.
			if escapes(stack, target) {
				return "", "", fmt.Errorf("%w: %q goes through symlink /%s -> %s, out of the root", ErrUnsafeEntry, entry, rel, target)
			}
			queue = append(strings.Split(target, "/"), queue...)
		default:
			return "", "", fmt.Errorf("entry %q: /%s is not a directory", entry, rel)
		}
	}
	return strings.Join(stack, "/"), name, nil
}

// escapes reports whether the relative target, read from the directory
// stack, climbs above the root.
func escapes(stack []string, target string) bool {
	depth := len(stack)
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// splitEntry splits a layer path into components, refusing ".." that
// climbs above the root. "./a/b/", "/a/b" and "a/b" are the same path.
func splitEntry(entry string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(entry, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: %q goes above the root", ErrUnsafeEntry, entry)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, c)
		}
	}
	return out, nil
}
