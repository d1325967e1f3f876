package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoSpace is returned when the disk fills while an image is built.
var ErrNoSpace = errors.New("not enough disk space")

// usage is what a root filesystem tree holds.
type usage struct {
	bytes  int64 // file data rounded up to 4 KiB blocks, plus directories
	inodes int64
}

func treeUsage(ctx context.Context, root string) (usage, error) {
	var u usage
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		u.inodes++
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			if fi, err := d.Info(); err == nil {
				u.bytes += (fi.Size() + 4095) &^ 4095
			}
		} else if d.IsDir() {
			u.bytes += 4096
		}
		return nil
	})
	return u, err
}

// ext4Size is the image size for content u: content plus a fifth plus
// 128 MiB for the journal, metadata and the first boot's writes.
func ext4Size(u usage) int64 {
	n := u.bytes + u.bytes/5 + u.inodes*256 + 128<<20
	return (n + 1<<20 - 1) &^ (1<<20 - 1)
}

// BuildExt4 makes the ext4 image img from the tree root with mkfs.ext4 -d.
// size 0 means content plus headroom; a size too small for the content
// fails before anything is written.
func BuildExt4(ctx context.Context, root, img string, size int64) (int64, error) {
	u, err := treeUsage(ctx, root)
	if err != nil {
		return 0, fmt.Errorf("measuring root filesystem: %w", err)
	}
	need := ext4Size(u)
	if size == 0 {
		size = need
	} else if size < u.bytes+u.bytes/10+64<<20 {
		return 0, fmt.Errorf("%w: --size %s is too small for %s of content (try --size %s)", ErrInvalid, human(size), human(u.bytes), human(need))
	}
	if err := checkSpace(filepath.Dir(img), u.bytes+64<<20); err != nil {
		return 0, err
	}
	inodes := u.inodes + u.inodes/2 + 16384
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-N", strconv.FormatInt(inodes, 10),
		"-E", "root_owner=0:0", "-d", root, img, strconv.FormatInt(size/1024, 10)+"k")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "No space left") || strings.Contains(msg, "Could not allocate block") && isFull(filepath.Dir(img)) {
			return 0, fmt.Errorf("%w in %s while building the ext4 image (%s of content): free some space and pull again", ErrNoSpace, filepath.Dir(img), human(u.bytes))
		}
		return 0, fmt.Errorf("mkfs.ext4: %v: %s", err, msg)
	}
	return size, nil
}

// checkSpace fails when dir's filesystem has less than need bytes free.
func checkSpace(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // cannot tell; mkfs will say
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%w in %s: the image needs about %s, %s is free", ErrNoSpace, dir, human(need), human(free))
	}
	return nil
}

func isFull(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && int64(st.Bavail)*st.Bsize < 16<<20
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%dKiB", b>>10)
}
