// Package untar extracts tar streams into a directory. Every file
// operation goes through an os.Root, so no entry, nor a symlink in the
// archive or already in the directory, can reach outside it. The agent
// uses it to unpack workspaces in the guest, the CLI to export them back
// to the host.
package untar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// ErrUnsafe is matched (errors.Is) by the error for an entry Extract
// refuses: one whose name, or hard link target, would land outside the
// directory, or a non-directory that names the directory itself.
var ErrUnsafe = errors.New("unsafe tar entry")

type unsafeError struct{ name, why string }

func (e *unsafeError) Error() string        { return fmt.Sprintf("tar entry %q %s", e.name, e.why) }
func (e *unsafeError) Is(target error) bool { return target == ErrUnsafe }

// Options says which metadata of the archive Extract keeps.
type Options struct {
	// Owners keeps each entry's owner, and with it the setuid, setgid
	// and sticky bits; changing owners needs root. Without it, entries
	// belong to the caller and those bits are dropped.
	Owners bool
	// Umask is cleared from every entry's mode.
	Umask fs.FileMode
}

// Extract unpacks the tar stream r into dir, created (0755) when missing.
// The archive wins over what dir holds: an entry replaces whatever is at
// its name (a directory only by a non-directory). Regular files are
// created afresh, so a hard link already in dir is never written
// through. Regular files and directories keep their modes (less
// opts.Umask) and mtimes; symlinks are recreated as they are and never
// followed while extracting; hard links must point inside dir; devices
// and fifos are skipped; a directory entry naming dir itself is ignored,
// so dir keeps its own mode. Names are cleaned; absolute names and names
// that climb out are refused (ErrUnsafe).
func Extract(ctx context.Context, r io.Reader, dir string, opts Options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("extracting into %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extracting into %s: %w", dir, err)
	}
	defer root.Close()
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirTimes []dirTime
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			if hdr.Typeflag != tar.TypeDir {
				return &unsafeError{hdr.Name, "names the directory itself"}
			}
			continue
		}
		if err := extractEntry(root, name, hdr, tr, opts); err != nil {
			return fmt.Errorf("extracting %s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirTimes = append(dirTimes, dirTime{name, hdr.ModTime})
		}
	}
	// Directory mtimes last: extracting their entries changed them.
	for i := len(dirTimes) - 1; i >= 0; i-- {
		_ = root.Chtimes(dirTimes[i].name, dirTimes[i].t, dirTimes[i].t)
	}
	return nil
}

// cleanName cleans a tar entry name to a slash path relative to the
// root ("." for the root itself). Absolute names and names that climb
// out are refused.
func cleanName(n string) (string, error) {
	c := path.Clean(n)
	if path.IsAbs(n) || c == ".." || strings.HasPrefix(c, "../") {
		return "", &unsafeError{n, "would land outside the destination"}
	}
	return c, nil
}

// extractEntry creates one entry and applies its metadata.
func extractEntry(root *os.Root, name string, hdr *tar.Header, r io.Reader, opts Options) error {
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	keep := fs.ModePerm
	if opts.Owners {
		keep |= fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	}
	mode := hdr.FileInfo().Mode() & keep &^ opts.Umask
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
			if err := root.Remove(name); err != nil {
				return err
			}
		}
		if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		if err := root.RemoveAll(name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := root.RemoveAll(name); err != nil {
			return err
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		if opts.Owners {
			return root.Lchown(name, hdr.Uid, hdr.Gid)
		}
		return nil
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := root.RemoveAll(name); err != nil {
			return err
		}
		return root.Link(target, name)
	default:
		return nil // devices, fifos: not part of a workspace
	}
	// Chown before chmod: it clears setuid and setgid bits.
	if opts.Owners {
		if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := root.Chmod(name, mode); err != nil {
		return err
	}
	return root.Chtimes(name, hdr.ModTime, hdr.ModTime)
}
