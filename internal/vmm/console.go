package vmm

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// DefaultConsoleLogMax is the console log cap drivers use when
// Spec.ConsoleLogMax is 0.
const DefaultConsoleLogMax = 8 << 20

// minConsoleLogMax keeps a cap from being so small that every line
// rotates.
const minConsoleLogMax = 64 << 10

// RotatedPath is where a console log's older half is kept.
func RotatedPath(path string) string { return path + ".1" }

// RemoveConsoleLog removes a console log and its older half.
func RemoveConsoleLog(path string) error {
	var errs []error
	for _, p := range []string{path, RotatedPath(path)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// consoleTrimInterval is how often TrimConsoleFile looks at the file.
const consoleTrimInterval = 100 * time.Millisecond

// TrimConsoleFile keeps a console log that a VMM appends to (QEMU's file
// chardev, Firecracker's stdout; both O_APPEND) under capBytes (0:
// DefaultConsoleLogMax, at least 64 KiB) until done is closed: every
// 100 ms, once the file holds more than half the cap, it copies the file
// to path.1 (replacing the older one) and truncates it, and the VMM's
// next writes start the file again. So path and path.1 together hold the
// latest output and at most the cap plus what the guest prints in two
// intervals; output printed between the copy and the truncation (a few
// microseconds) is lost, and nothing trims the file while no daemon runs.
func TrimConsoleFile(path string, capBytes int64, done <-chan struct{}) {
	if capBytes == 0 {
		capBytes = DefaultConsoleLogMax
	}
	half := max(capBytes, minConsoleLogMax) / 2
	t := time.NewTicker(consoleTrimInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		_ = trimOnce(path, half)
	}
}

// trimOnce moves the file's content to path.1 and truncates it when it
// holds more than half bytes.
func trimOnce(path string, half int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() <= half {
		return err
	}
	tmp := RotatedPath(path) + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// Copy until the file stops growing, so that only what the guest
	// prints between the last read and the truncation (microseconds) is
	// lost, not what it printed during the copy.
	var copied int64
	for range 8 {
		var n int64
		n, err = io.Copy(out, f)
		copied += n
		if err != nil || n == 0 {
			break
		}
	}
	// Rename first: whoever sees the file shrink finds its old content
	// in path.1. Then a last top-up for a write that landed meanwhile.
	if err == nil {
		err = os.Rename(tmp, RotatedPath(path))
	}
	if err == nil {
		if st, serr := f.Stat(); serr == nil && st.Size() > copied {
			_, _ = io.Copy(out, f)
		}
		err = f.Truncate(0)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
