package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
	"golang.org/x/sys/unix"

	"banger/internal/disk"
	"banger/internal/diskspace"
)

// ErrNoSpace is returned when the disk fills while an image is built.
var ErrNoSpace = errors.New("not enough disk space")

// ext4Size is the image size for content u: content plus a fifth plus
// 128 MiB for the journal, metadata and the first boot's writes.
func ext4Size(u usage) int64 {
	n := u.bytes + u.bytes/5 + u.inodes*256 + 128<<20
	return (n + 1<<20 - 1) &^ (1<<20 - 1)
}

// maxGrowth is the largest size a VM disk made from an image may grow to
// while the filesystem stays resizable in place: tar2ext4 reserves group
// descriptors for it (4 KiB per 512 GiB).
const maxGrowth = 4 << 40

// buildExt4 writes the tree as the ext4 image img, with file contents
// streamed from layers: tar2ext4 builds a compact filesystem straight
// from the tree's tar stream (nothing is unpacked on the host), then
// e2fsprogs make it writable, grow it to size and add a journal. size 0
// means content plus headroom; a size too small for the content fails
// before anything is written. It returns the size.
func buildExt4(ctx context.Context, r *rootfs, layers []layerSource, img string, size int64) (int64, error) {
	u := r.usage()
	// tar2ext4 makes exactly as many inodes as the tree has; reserve as
	// many spare ones as mkfs.ext4 would give (half the content's, plus
	// 16384), by padding the stream with empty files removed afterwards.
	r.pad = int(u.inodes/2 + 16384)
	u.inodes += int64(r.pad)
	need := ext4Size(u)
	if size == 0 {
		size = need
	} else if size < u.bytes+u.bytes/10+64<<20 {
		return 0, fmt.Errorf("%w: --size %s is too small for %s of content (try --size %s)", ErrInvalid, human(size), human(u.bytes), human(need))
	}
	dir := filepath.Dir(img)
	if err := checkSpace(dir, u.bytes+64<<20); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := r.emit(ctx, tw, layers)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err = tar2ext4.ConvertTarToExt4(pr, &spaceFile{File: f, dir: dir}, tar2ext4.MaximumDiskSize(maxGrowth))
	pr.CloseWithError(errors.New("ext4 build stopped"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrNoSpace) {
			return 0, noSpace(dir, fmt.Sprintf("while building the ext4 image (%s of content)", human(u.bytes)))
		}
		return 0, fmt.Errorf("building the ext4 image: %w", err)
	}
	if err := finishExt4(ctx, img, size); err != nil {
		return 0, err
	}
	return size, nil
}

// finishExt4 turns tar2ext4's compact read-only filesystem into a root
// disk: writable, size bytes, with a journal.
func finishExt4(ctx context.Context, img string, size int64) error {
	steps := [][]string{
		{"tune2fs", "-O", "^read-only", img},
		{"debugfs"},            // drops the inode reserve, below
		{"e2fsck", "-fy", img}, // also sets the inode bitmap padding tar2ext4 leaves unset
		{"resize2fs", img, strconv.FormatInt(size/1024, 10) + "K"},
		{"tune2fs", "-O", "has_journal", "-L", "rootfs", img},
	}
	for _, s := range steps {
		if s[0] == "debugfs" {
			// The reserve's directory inode is cleared, so e2fsck frees
			// its empty, now unattached files.
			if err := disk.Debugfs(ctx, img, "clri /"+padDir+"\nunlink /"+padDir+"\n"); err != nil {
				return err
			}
			continue
		}
		out, err := disk.Tool(ctx, s[0], s[1:]...).CombinedOutput()
		var ee *exec.ExitError
		if s[0] == "e2fsck" && errors.As(err, &ee) && ee.ExitCode() == 1 {
			err = nil // errors corrected
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := strings.TrimSpace(string(out))
			if strings.Contains(msg, "No space left") {
				return noSpace(filepath.Dir(img), "while growing the ext4 image")
			}
			return fmt.Errorf("%s: %v: %s", s[0], err, msg)
		}
	}
	return nil
}

// spaceFile fails writes with ErrNoSpace before the disk holding dir is
// full, so a build never takes the last free blocks of the state dir.
type spaceFile struct {
	*os.File
	dir     string
	written int64
}

func (s *spaceFile) Write(p []byte) (int, error) {
	if s.written += int64(len(p)); s.written >= 64<<20 {
		s.written = 0
		if isFull(s.dir) {
			return 0, fmt.Errorf("%w in %s", ErrNoSpace, s.dir)
		}
	}
	return s.File.Write(p)
}

// checkSpace fails when dir's filesystem has less than need bytes free.
func checkSpace(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // cannot tell; mkfs will say
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%w in %s: the image needs about %s; %s has too little: free some space and pull again",
			ErrNoSpace, dir, human(need), diskspace.Describe(dir))
	}
	return nil
}

// noSpace is ErrNoSpace in dir, naming its file system, while doing.
func noSpace(dir, doing string) error {
	return fmt.Errorf("%w in %s: %s is full %s: free some space and pull again", ErrNoSpace, dir, diskspace.Describe(dir), doing)
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
