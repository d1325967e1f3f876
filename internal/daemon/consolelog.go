package daemon

import (
	"io"
	"os"
)

// consoleFollower sends a console log to w as it grows, following it
// when the driver rotates it (console.log becomes console.log.1 and a new
// console.log starts).
type consoleFollower struct {
	w    io.Writer
	path string
	f    *os.File // nil until the log exists
}

// copyAvailable sends what the current file holds past what was sent. An
// error means the client went away.
func (c *consoleFollower) copyAvailable() error {
	if c.f == nil {
		return nil
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := c.f.Read(buf)
		if n > 0 {
			if _, err := c.w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr != nil {
			return nil
		}
	}
}

// reopenIfRotated switches to the file now at path when it is not the
// one being read, after sending the rest of the old one.
func (c *consoleFollower) reopenIfRotated() {
	st, err := os.Stat(c.path)
	if err != nil {
		return
	}
	if c.f != nil {
		if cur, err := c.f.Stat(); err == nil && os.SameFile(cur, st) {
			return
		}
		_ = c.copyAvailable()
		c.f.Close()
	}
	c.f, _ = os.Open(c.path)
}

func (c *consoleFollower) close() {
	if c.f != nil {
		c.f.Close()
	}
}
