package ext4

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64): grow the
// mounted filesystem to the given number of blocks.
const ioctlResizeFS = 0x40086610

// GrowMounted grows the ext4 filesystem mounted at dir to fill its block
// device dev ("" finds it from dir through /sys/dev/block). It returns
// the sizes before and after, equal when there was nothing to do: the
// filesystem already fills the device, or it is not ext4, or the kernel
// cannot grow it online (OnlineGrowable; the host grew it offline then).
// The kernel does the work in place and keeps every file; a failure
// leaves the filesystem as it was.
func GrowMounted(dir, dev string) (from, to int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		return 0, 0, nil
	}
	if dev == "" {
		if dev, err = deviceOf(dir); err != nil {
			return 0, 0, err
		}
	}
	d, err := os.Open(dev)
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	s, err := ReadSuper(d)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", dev, err)
	}
	devSize, err := d.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	want := devSize / s.BlockSize
	if want <= s.Blocks || s.OnlineGrowable() != nil {
		return s.Size(), s.Size(), nil
	}
	m, err := os.Open(dir)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	n := uint64(want)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, m.Fd(), ioctlResizeFS, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return s.Size(), s.Size(), fmt.Errorf("growing %s to %d blocks: %w", dir, want, errno)
	}
	return s.Size(), want * s.BlockSize, nil
}

// deviceOf finds the block device of the filesystem mounted at dir: its
// device number, looked up in /sys/dev/block, named under /dev.
func deviceOf(dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", err
	}
	uevent := fmt.Sprintf("/sys/dev/block/%d:%d/uevent", unix.Major(st.Dev), unix.Minor(st.Dev))
	data, err := os.ReadFile(uevent)
	if err != nil {
		return "", fmt.Errorf("finding the device of %s: %w", dir, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			return filepath.Join("/dev", name), nil
		}
	}
	return "", fmt.Errorf("finding the device of %s: no DEVNAME in %s", dir, uevent)
}
