// Package disk makes and changes raw ext4 disk images: cheap clones
// (reflink, else a sparse-aware copy), growing a disk (a sparse file, and
// its filesystem offline only when the guest cannot grow it online), and
// copying a directory tree into an image without mounting it.
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

	"banger/internal/ext4"
)

// Clone methods, as vm inspect reports them.
const (
	MethodReflink = "reflink" // FICLONE: shared extents, copy-on-write
	MethodSparse  = "copy"    // SEEK_DATA/SEEK_HOLE: only data is copied
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

// Who grows a filesystem, as Grow reports it.
const (
	GrowNone    = ""          // the file was already that size
	GrowGuest   = "guest"     // only the file grew; the guest grows its filesystem at boot
	GrowOffline = "resize2fs" // resize2fs grew the filesystem here
)

// Grow enlarges the image to size bytes; a size not larger than the
// current one is left alone. The file only gets a new length, so it stays
// sparse and costs nothing until the guest writes. When Linux can grow
// the filesystem while it is mounted (ext4.Super.OnlineGrowable) that is
// all: banger's initrd and agent grow it to fill the disk at boot
// (ext4.GrowMounted), in time independent of the size. Otherwise (images
// pulled from OCI registries are built by tar2ext4, whose sparse_super2
// the kernel cannot resize online) resize2fs grows it here, offline; it
// runs e2fsck first only when resize2fs would insist on one (the
// filesystem was mounted since its last check or is not clean), which a
// fresh copy of a never-mounted image is not.
func Grow(ctx context.Context, path string, size int64) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return GrowNone, err
	}
	if size <= st.Size() {
		return GrowNone, nil
	}
	sb, err := ext4.ReadSuperFile(path)
	if err != nil {
		return GrowNone, fmt.Errorf("growing %s: %w", path, err)
	}
	if err := os.Truncate(path, size); err != nil {
		return GrowNone, fmt.Errorf("growing %s: %w", path, err)
	}
	if sb.OnlineGrowable() == nil {
		return GrowGuest, nil
	}
	if sb.NeedsCheck() {
		// e2fsck exits 1 when it fixed something, which is fine here.
		if out, err := helper(ctx, "e2fsck", "-fy", path).CombinedOutput(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() > 1 {
				return GrowNone, fmt.Errorf("checking %s: %w: %s", path, err, bytes.TrimSpace(out))
			}
		}
	}
	if out, err := helper(ctx, "resize2fs", path).CombinedOutput(); err != nil {
		return GrowNone, fmt.Errorf("resizing %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return GrowOffline, nil
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
