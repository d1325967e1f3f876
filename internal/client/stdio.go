package client

import (
	"io"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// Stdio is where a guest command's or ssh session's input and output go.
// The CLI passes os.Stdin, os.Stdout and os.Stderr; the engine's own notes
// ("VM x is still running ...") go to Err too. A terminal is used only when
// In is one (a file on a tty).
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// errOut is where notes go: Err, or nowhere.
func (s Stdio) errOut() io.Writer {
	if s.Err == nil {
		return io.Discard
	}
	return s.Err
}

// Display shows the progress of long steps to a person. Event gets each
// progress and log event of a step; Done ends the step (clearing a bar
// drawn on a terminal). A nil Display shows nothing.
type Display interface {
	Event(api.Event)
	Done()
}

// step returns the Progress of one step shown on d and the func that ends it.
func step(d Display) (Progress, func()) {
	if d == nil {
		return nil, func() {}
	}
	return d.Event, d.Done
}

// IsTerminal reports whether r is a terminal.
func IsTerminal(r io.Reader) bool {
	_, ok := terminalFd(r)
	return ok
}

// terminalFd returns r's file descriptor when r is a terminal.
func terminalFd(r io.Reader) (int, bool) {
	f, ok := r.(interface{ Fd() uintptr })
	if !ok {
		return -1, false
	}
	fd := int(f.Fd())
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return fd, err == nil
}

// winsize returns the size of the terminal fd.
func winsize(fd int) (rows, cols uint16, ok bool) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, false
	}
	return ws.Row, ws.Col, true
}

// makeRaw puts the terminal fd into raw mode and returns the restore
// function, or nil when fd is not a terminal.
func makeRaw(fd int) func() {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}
