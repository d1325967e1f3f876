package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// orphanExitWait bounds how long reapOrphans waits for the processes it
// killed to be gone: a QEMU unmapping gigabytes of guest memory takes a
// moment, and until it has gone it still holds its tap and files.
const orphanExitWait = 10 * time.Second

// reapOrphans kills processes whose command line names a path inside dir:
// a VMM started by a daemon that died before it could record the VMM.
// VM directories are unique per VM, so nothing else can match. It returns
// once they have exited (or orphanExitWait has passed).
func reapOrphans(dir string) []int {
	if dir == "" {
		return nil
	}
	needle := []byte(filepath.Clean(dir) + "/")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var killed, fds []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, needle) {
			continue
		}
		// Through a pidfd, so a PID reused since the read is not hit,
		// and so the exit can be waited for though it is not our child.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
			killed = append(killed, pid)
			fds = append(fds, fd)
		} else {
			unix.Close(fd)
		}
	}
	waitExited(fds, orphanExitWait)
	return killed
}

// waitExited waits until every process behind the pidfds has exited, or
// timeout has passed, and closes the pidfds.
func waitExited(fds []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, fd := range fds {
		for {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n > 0 {
				break
			}
		}
		unix.Close(fd)
	}
}
