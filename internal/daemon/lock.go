package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/config"
)

// ErrAlreadyRunning reports that another bangerd holds the state directory.
var ErrAlreadyRunning = errors.New("another bangerd is running on this state directory")

// lockFile is the daemon's exclusive claim on a state directory. The
// kernel drops the flock when the process dies, so a killed daemon never
// leaves a stale lock.
type lockFile struct{ f *os.File }

func acquireLock(path string) (*lockFile, error) {
	f, err := openNoFollow(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := make([]byte, 32)
		n, _ := f.ReadAt(holder, 0)
		holder = holder[:n]
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			return nil, fmt.Errorf("%w (pid %s holds %s)", ErrAlreadyRunning, pid, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &lockFile{f: f}, nil
}

func (l *lockFile) release() {
	l.f.Truncate(0)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}

// waitLock takes the state directory's lock. When another daemon holds it
// but does not answer on the socket, that daemon is on its way out (a
// restart): wait a little for it to go. When it answers, give up at once.
func waitLock(ctx context.Context, dirs config.Dirs) (*lockFile, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := acquireLock(dirs.Lock())
		if !errors.Is(err, ErrAlreadyRunning) || answers(dirs.Socket()) || time.Now().After(deadline) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func answers(socket string) bool {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
