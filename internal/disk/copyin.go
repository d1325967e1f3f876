package disk

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// CopyIn copies the tree under dir into the ext4 image at img, at the same
// paths, with modes and ownership, using debugfs (no mount, no root).
// Existing files are replaced; existing directories are kept.
func CopyIn(ctx context.Context, img, dir string) error {
	var script strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		target := "/" + filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if strings.ContainsAny(target, "\" \n") {
			return fmt.Errorf("copying %s into %s: names with spaces or quotes are not supported", target, img)
		}
		return debugfsCommands(&script, p, target, info)
	})
	if err != nil {
		return err
	}
	return debugfs(ctx, img, script.String())
}

func debugfsCommands(w *strings.Builder, src, target string, info fs.FileInfo) error {
	st, _ := info.Sys().(*syscall.Stat_t)
	var uid, gid uint32
	if st != nil {
		uid, gid = st.Uid, st.Gid
	}
	var typ uint32
	switch {
	case info.IsDir():
		// mkdir fails harmlessly when the directory exists.
		fmt.Fprintf(w, "mkdir %s\n", target)
		typ = 0o040000
	case info.Mode()&fs.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "rm %s\nsymlink %s %s\n", target, target, link)
		return nil
	case info.Mode().IsRegular():
		fmt.Fprintf(w, "rm %s\nwrite %s %s\n", target, src, target)
		typ = 0o100000
	default:
		return fmt.Errorf("copying %s: unsupported file type %s", src, info.Mode().Type())
	}
	perm := uint32(info.Mode().Perm())
	if info.Mode()&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if info.Mode()&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if info.Mode()&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	fmt.Fprintf(w, "sif %s mode 0%o\nsif %s uid %d\nsif %s gid %d\n", target, typ|perm, target, uid, target, gid)
	return nil
}

// Debugfs runs the debugfs script (one command a line) against img,
// writable, and fails when any command fails.
func Debugfs(ctx context.Context, img, script string) error { return debugfs(ctx, img, script) }

// debugfs runs script against img. debugfs exits 0 even when a command
// fails, so its stderr is read: anything but the banner and the expected
// complaints of the rm and mkdir that make CopyIn idempotent is an error.
func debugfs(ctx context.Context, img, script string) error {
	cmd := helper(ctx, "debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs on %s: %w: %s", img, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if bad := debugfsErrors(stderr.String()); len(bad) > 0 {
		return fmt.Errorf("debugfs on %s: %s", img, strings.Join(bad, "; "))
	}
	return nil
}

// debugfsErrors returns the lines of debugfs's stderr that report a real
// failure.
func debugfsErrors(stderr string) []string {
	var bad []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", strings.HasPrefix(line, "debugfs "),
			strings.HasPrefix(line, "rm: File not found"),
			strings.Contains(line, "directory already exists"):
			continue
		}
		bad = append(bad, line)
	}
	return bad
}

// MaxReadFile is the most ReadFile returns: it reads small files (an
// os-release, the agent binary), and an image's file may be anything.
const MaxReadFile = 64 << 20

// ReadFile returns the content of path inside the ext4 image img, or an
// error when it does not exist or is larger than MaxReadFile.
func ReadFile(ctx context.Context, img, path string) ([]byte, error) {
	stdout := &capBuffer{max: MaxReadFile}
	var stderr bytes.Buffer
	cmd := helper(ctx, "debugfs", "-R", "cat "+path, img)
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); stdout.over {
		return nil, fmt.Errorf("reading %s in %s: larger than %d MiB", path, img, MaxReadFile>>20)
	} else if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", path, img, err)
	}
	if strings.Contains(stderr.String(), "File not found") {
		return nil, fmt.Errorf("%s in %s: %w", path, img, fs.ErrNotExist)
	}
	return stdout.Bytes(), nil
}

// capBuffer keeps at most max bytes and fails the write past them.
type capBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if c.Len()+len(p) > c.max {
		c.over = true
		return 0, fmt.Errorf("more than %d bytes", c.max)
	}
	return c.Buffer.Write(p)
}

// Exists reports whether path exists inside the ext4 image img (a symlink
// counts, whatever it points to).
func Exists(ctx context.Context, img, path string) bool {
	out, err := helper(ctx, "debugfs", "-R", "stat "+path, img).CombinedOutput()
	return err == nil && !bytes.Contains(out, []byte("File not found")) && bytes.Contains(out, []byte("Inode:"))
}
