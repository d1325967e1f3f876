// Package ext4 reads the few ext4 superblock fields banger decides on and
// grows a mounted ext4 filesystem in place. The host uses it to choose who
// grows a VM's root filesystem (the guest, online, where the kernel can;
// the host, offline, where it cannot); the guest uses it to grow its root
// at boot. It depends on nothing but the standard library and x/sys.
package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Feature bits banger looks at (see the kernel's fs/ext4/ext4.h).
const (
	compatHasJournal   = 0x4
	compatResizeInode  = 0x10
	compatSparseSuper2 = 0x200
	incompat64Bit      = 0x80
	incompatMetaBG     = 0x10
	roCompatReadOnly   = 0x1000

	stateValid  = 0x1
	stateErrors = 0x2

	superOffset = 1024
	superSize   = 1024
	magic       = 0xEF53
)

// ErrNotExt4 is returned for data that holds no ext2/3/4 superblock.
var ErrNotExt4 = errors.New("no ext4 superblock")

// Super is what banger reads from an ext4 superblock.
type Super struct {
	BlockSize int64 // bytes
	Blocks    int64 // blocks in the filesystem

	Compat, Incompat, ROCompat uint32
	State                      uint16
	MountTime, CheckTime       int64 // seconds since the epoch; 0 for never
}

// Size is the filesystem's size in bytes.
func (s Super) Size() int64 { return s.Blocks * s.BlockSize }

// ReadSuper reads the superblock of the filesystem r holds.
func ReadSuper(r io.ReaderAt) (Super, error) {
	b := make([]byte, superSize)
	if _, err := r.ReadAt(b, superOffset); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Super{}, ErrNotExt4
		}
		return Super{}, err
	}
	le := binary.LittleEndian
	if le.Uint16(b[0x38:]) != magic {
		return Super{}, ErrNotExt4
	}
	logBlock := le.Uint32(b[0x18:])
	if logBlock > 6 { // 64 KiB is the largest ext4 block
		return Super{}, fmt.Errorf("%w: block size 2^%d KiB", ErrNotExt4, logBlock)
	}
	s := Super{
		BlockSize: 1024 << logBlock,
		Blocks:    int64(le.Uint32(b[0x4:])),
		Compat:    le.Uint32(b[0x5C:]),
		Incompat:  le.Uint32(b[0x60:]),
		ROCompat:  le.Uint32(b[0x64:]),
		State:     le.Uint16(b[0x3A:]),
		MountTime: int64(le.Uint32(b[0x2C:])) | int64(b[0x275])<<32,
		CheckTime: int64(le.Uint32(b[0x40:])) | int64(b[0x277])<<32,
	}
	if s.Incompat&incompat64Bit != 0 {
		s.Blocks |= int64(le.Uint32(b[0x150:])) << 32
	}
	return s, nil
}

// ReadSuperFile reads the superblock of the filesystem in the file or
// block device at path.
func ReadSuperFile(path string) (Super, error) {
	f, err := os.Open(path)
	if err != nil {
		return Super{}, err
	}
	defer f.Close()
	s, err := ReadSuper(f)
	if err != nil {
		return Super{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// OnlineGrowable returns nil when Linux can grow the filesystem while it
// is mounted (EXT4_IOC_RESIZE_FS), else why not. The kernel refuses
// sparse_super2 filesystems (fs/ext4/resize.c, ext4_resize_begin, since
// commit b1489186cc83 "ext4: add check to prevent attempting to resize an
// fs with sparse_super2"; tar2ext4, which builds pulled images, always
// sets it) and filesystems without a journal. banger also wants
// resize_inode or meta_bg, as mkfs.ext4 makes them: the layouts it tests.
// Only features are looked at: the kernel itself refuses to grow a
// filesystem with errors.
func (s Super) OnlineGrowable() error {
	switch {
	case s.Compat&compatSparseSuper2 != 0:
		return errors.New("it has the sparse_super2 feature, which the kernel cannot resize online")
	case s.Compat&compatHasJournal == 0:
		return errors.New("it has no journal")
	case s.ROCompat&roCompatReadOnly != 0:
		return errors.New("it is marked read-only")
	case s.Compat&compatResizeInode == 0 && s.Incompat&incompatMetaBG == 0:
		return errors.New("it has neither resize_inode nor meta_bg")
	}
	return nil
}

// NeedsCheck reports whether resize2fs would insist on e2fsck -f before
// growing the filesystem offline: it was mounted since its last check, or
// is not marked clean. A fresh copy of a never-mounted image needs none.
func (s Super) NeedsCheck() bool {
	return s.State&stateValid == 0 || s.State&stateErrors != 0 || s.CheckTime < s.MountTime
}
