package vmm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// DefaultConsoleLogMax is the console log cap drivers use when
// Spec.ConsoleLogMax is 0.
const DefaultConsoleLogMax = 8 << 20

// minConsoleLogMax keeps a cap from being so small that every line
// rotates.
const minConsoleLogMax = 64 << 10

// ConsoleLog is a size-capped, rotating console log: it writes to path
// until the file holds half the cap, then renames it to path.1 (replacing
// the older one) and starts a new path. The two files together never
// hold more than the cap, and they always hold the most recent output:
// at least half the cap of it once that much was written. A guest that
// prints without end cannot fill the host's disk. It is safe for
// concurrent use.
type ConsoleLog struct {
	path string
	half int64

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

// OpenConsoleLog opens (appending to) the console log at path, capped at
// capBytes (0: DefaultConsoleLogMax; at least 64 KiB). The files are 0600.
func OpenConsoleLog(path string, capBytes int64) (*ConsoleLog, error) {
	if capBytes == 0 {
		capBytes = DefaultConsoleLogMax
	}
	capBytes = max(capBytes, minConsoleLogMax)
	l := &ConsoleLog{path: path, half: capBytes / 2}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

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

func (l *ConsoleLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("opening console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening console log: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("console log %s is not a regular file", l.path)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends p, rotating as often as needed; it keeps only the last
// half cap of a p larger than that.
func (l *ConsoleLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	if int64(len(p)) > l.half {
		p = p[int64(len(p))-l.half:]
	}
	for len(p) > 0 {
		if l.f == nil {
			return 0, os.ErrClosed
		}
		room := l.half - l.size
		if room <= 0 {
			if err := l.rotate(); err != nil {
				return 0, err
			}
			continue
		}
		chunk := p[:min(int64(len(p)), room)]
		w, err := l.f.Write(chunk)
		l.size += int64(w)
		if err != nil {
			return 0, fmt.Errorf("writing console log: %w", err)
		}
		p = p[w:]
	}
	return n, nil
}

// rotate moves the current file to path.1 and starts a new one.
func (l *ConsoleLog) rotate() error {
	l.f.Close()
	l.f = nil
	if err := os.Rename(l.path, RotatedPath(l.path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotating console log: %w", err)
	}
	return l.open()
}

// Close closes the log.
func (l *ConsoleLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// consoleTrimInterval is how often TrimConsoleFile looks at the file.
const consoleTrimInterval = 250 * time.Millisecond

// TrimConsoleFile caps a console log that a VMM writes itself (with
// O_APPEND, such as Firecracker's stdout) until done is closed: every
// 250 ms, once the file holds more than half of capBytes (0:
// DefaultConsoleLogMax), it copies the file to path.1 and truncates it,
// and the VMM's next writes start the file again. It is weaker than
// ConsoleLog: the file can pass its cap by what the guest prints in one
// interval, output printed between the copy and the truncation is lost,
// and nothing trims the file while no daemon runs.
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
	// Keep the last half: the older half is what rotation would keep.
	_, err = io.Copy(out, io.NewSectionReader(f, max(0, st.Size()-half), half))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		err = os.Rename(tmp, RotatedPath(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
