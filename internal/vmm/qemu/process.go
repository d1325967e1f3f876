package qemu

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// usable reports whether a device node can be opened read-write, which is
// what QEMU needs from /dev/kvm and /dev/vhost-vsock.
func usable(dev string) bool {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// openPidfd returns a pidfd for pid. A pidfd keeps naming the same
// process even if its PID is reused, so signals sent through it cannot
// hit a stranger. A missing process wraps vmm.ErrNotRunning.
func openPidfd(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, fmt.Errorf("pid %d: %w", pid, vmm.ErrNotRunning)
	}
	if err != nil {
		return -1, fmt.Errorf("opening pidfd for pid %d: %w", pid, err)
	}
	return fd, nil
}

// waitPidfd blocks until the process behind fd has exited. It works for
// processes that are not our children, such as adopted VMMs.
func waitPidfd(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("polling pidfd: %w", err)
		}
		if fds[0].Revents != 0 {
			return nil
		}
	}
}

// exitedPidfd reports, without blocking, whether the process behind fd
// has exited.
func exitedPidfd(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}
