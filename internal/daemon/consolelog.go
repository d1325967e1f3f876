package daemon

import (
	"io"
	"os"

	"banger/internal/vmm"
)

// consoleFollower sends a console log to w as it grows, following it when
// the driver trims it (vmm.TrimConsoleFile copies console.log to
// console.log.1 and truncates it) or a new boot replaces it.
type consoleFollower struct {
	w    io.Writer
	path string
	f    *os.File // nil until the log exists
	off  int64    // bytes of f already sent
}

// copyAvailable sends what the current file holds past what was sent. An
// error means the client went away.
func (c *consoleFollower) copyAvailable() error {
	if c.f == nil {
		return nil
	}
	n, err := io.Copy(c.w, c.f)
	c.off += n
	return err
}

// catchUp notices a trim or a replaced file. After a trim the unsent rest
// of the old content is in console.log.1, at the same offsets; it is sent
// first, then the file is read again from its start.
func (c *consoleFollower) catchUp() {
	st, err := os.Stat(c.path)
	if err != nil {
		return
	}
	if c.f == nil {
		c.f, _ = os.Open(c.path)
		c.off = 0
		return
	}
	cur, err := c.f.Stat()
	if err != nil {
		return
	}
	switch {
	case !os.SameFile(cur, st): // a new file
		_ = c.copyAvailable()
		c.f.Close()
		c.f, _ = os.Open(c.path)
		c.off = 0
	case cur.Size() < c.off: // trimmed
		if old, err := os.Open(vmm.RotatedPath(c.path)); err == nil {
			if _, err := old.Seek(c.off, io.SeekStart); err == nil {
				_, _ = io.Copy(c.w, old)
			}
			old.Close()
		}
		if _, err := c.f.Seek(0, io.SeekStart); err == nil {
			c.off = 0
		}
	}
}

func (c *consoleFollower) close() {
	if c.f != nil {
		c.f.Close()
	}
}
