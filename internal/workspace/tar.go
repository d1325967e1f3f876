package workspace

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/untar"
)

// WriteTar writes the set as a tar stream to w: regular files, symlinks
// and directories with their modes and mtimes, owned by root (the guest
// workspace belongs to root). Parent directories come before their
// contents. A file that cannot be read is an error naming it.
func (s Set) WriteTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	done := map[string]bool{}
	buf := make([]byte, 256<<10)
	for _, rel := range s.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.writeParents(tw, rel, done); err != nil {
			return err
		}
		if done[rel] {
			continue
		}
		done[rel] = true
		if err := s.writeEntry(tw, rel, buf); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing workspace tar: %w", err)
	}
	return nil
}

func (s Set) writeParents(tw *tar.Writer, rel string, done map[string]bool) error {
	dir := path.Dir(rel)
	if dir == "." || done[dir] {
		return nil
	}
	if err := s.writeParents(tw, dir, done); err != nil {
		return err
	}
	done[dir] = true
	return s.writeEntry(tw, dir, nil)
}

func (s Set) writeEntry(tw *tar.Writer, rel string, buf []byte) error {
	p := filepath.Join(s.Root, filepath.FromSlash(rel))
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed since it was listed (e.g. by git gc): nothing to copy
	}
	if err != nil {
		return fmt.Errorf("workspace file %s: %w", rel, err)
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return fmt.Errorf("workspace file %s: %w", rel, err)
		}
	}
	var f *os.File
	if fi.Mode().IsRegular() {
		// Open before writing the header, so an unreadable file is named
		// and the stream holds no half entry.
		if f, err = os.Open(p); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("workspace file %s cannot be read: %w", rel, unwrapPath(err))
		}
		defer f.Close()
	} else if !fi.IsDir() && link == "" {
		return nil // sockets, fifos, devices have no place in a workspace
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("workspace file %s: %w", rel, err)
	}
	hdr.Name = rel
	if fi.IsDir() {
		hdr.Name += "/"
	}
	// USTAR where it fits (mtimes to the second), PAX for long or
	// non-ASCII names.
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing workspace tar: %w", err)
	}
	if f == nil {
		return nil
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
	if err != nil {
		return fmt.Errorf("workspace file %s: %w", rel, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("workspace file %s shrank while being copied", rel)
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Extract unpacks the tar stream r into dest (created when missing).
// Entries may not leave dest, not even through symlinks in the archive
// or already in dest. Existing files are replaced; mtimes are kept, modes
// are kept less setuid, setgid and sticky bits and the process's umask
// (a guest cannot plant world-writable or setuid files on the host),
// ownership is not kept (the files belong to whoever runs banger). Symlinks are recreated as they are, so one may point
// anywhere on the host: extraction never follows them, but later readers
// of dest might.
func Extract(ctx context.Context, r io.Reader, dest string) error {
	return untar.Extract(ctx, r, dest, untar.Options{Umask: umask()})
}

// umask is the process's file mode creation mask (Linux: from
// /proc/self/status; 022 when that cannot be read).
func umask() fs.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o022
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return fs.FileMode(m)
			}
		}
	}
	return 0o022
}
