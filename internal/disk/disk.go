// Package disk makes and changes raw ext4 disk images: cheap clones
// (reflink, else a sparse-aware copy), growing a filesystem, and copying a
// directory tree into an image without mounting it.
package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Clone methods, as vm inspect reports them.
const (
	MethodReflink = "reflink"     // FICLONE: shared extents, copy-on-write
	MethodSparse  = "sparse-copy" // SEEK_DATA/SEEK_HOLE: only data is copied
)

// Clone makes dst a copy of src without costing time proportional to the
// image's size where the filesystem allows: a reflink when supported, else
// a copy of only the data regions. dst must not exist. On error dst is
// removed. dst is created 0600: a VM's disk is private to root. progress,
// when not nil, sees bytes copied of the data regions.
func Clone(ctx context.Context, src, dst string, progress func(done, total int64)) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	method := MethodReflink
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if err != nil {
		method = MethodSparse
		err = sparseCopy(ctx, in, out, st.Size(), progress)
	}
	// No fsync: like cp, the copy reaches the disk with normal writeback.
	// A fresh VM disk holds no user data yet, and syncing gigabytes would
	// make every create as slow as the image is large.
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("copying %s: %w", src, err)
	}
	return method, nil
}

// sparseCopy copies the data regions of in to out and leaves holes as
// holes.
func sparseCopy(ctx context.Context, in, out *os.File, size int64, progress func(done, total int64)) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var done int64
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seeking data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seeking hole: %w", err)
		}
		for pos := data; pos < hole; {
			n := min(int64(len(buf)), hole-pos)
			r, err := in.ReadAt(buf[:n], pos)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if r == 0 {
				break
			}
			if _, err := out.WriteAt(buf[:r], pos); err != nil {
				return err
			}
			pos += int64(r)
			done += int64(r)
		}
		if progress != nil {
			progress(done, size)
		}
		off = hole
	}
	return nil
}

// IsExt4 reports whether path holds an ext2/3/4 filesystem (its
// superblock magic).
func IsExt4(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 2)
	if _, err := f.ReadAt(magic, 1024+0x38); err != nil {
		return fmt.Errorf("%s is not an ext4 image: %w", path, err)
	}
	if magic[0] != 0x53 || magic[1] != 0xEF {
		return fmt.Errorf("%s is not an ext4 image (no ext superblock)", path)
	}
	return nil
}

// Grow enlarges the image to size bytes and its filesystem with it. A
// size not larger than the current one is left alone.
func Grow(ctx context.Context, path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if size <= st.Size() {
		return nil
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing %s: %w", path, err)
	}
	// resize2fs wants a freshly checked filesystem. e2fsck exits 1 when it
	// fixed something, which is fine here.
	if out, err := helper(ctx, "e2fsck", "-fy", path).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("checking %s: %w: %s", path, err, bytes.TrimSpace(out))
		}
	}
	if out, err := helper(ctx, "resize2fs", path).CombinedOutput(); err != nil {
		return fmt.Errorf("resizing %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// helper is a short-lived tool run on an image (debugfs, e2fsck,
// resize2fs). It is killed when ctx is done, and also when the daemon
// dies (Pdeathsig), so no helper outlives the request it served. VMMs,
// which must survive a daemon restart, are not started this way.
// Tool is exec.CommandContext for the e2fsprogs tools banger runs on
// images: they are killed when bangerd dies (Pdeathsig), so a killed
// daemon leaves no tool writing into a half-made image.
func Tool(ctx context.Context, name string, args ...string) *exec.Cmd {
	return helper(ctx, name, args...)
}

func helper(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
