package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
)

// StartSession starts a session in vm.
func (c *Client) StartSession(ctx context.Context, vm string, req api.StartSessionRequest) (api.Session, error) {
	var s api.Session
	err := c.Do(ctx, http.MethodPost, path("vms", vm, "sessions"), req, &s)
	return s, err
}

// Sessions lists vm's sessions.
func (c *Client) Sessions(ctx context.Context, vm string) ([]api.Session, error) {
	var out []api.Session
	err := c.Do(ctx, http.MethodGet, path("vms", vm, "sessions"), nil, &out)
	return out, err
}

// Session returns vm's session called name.
func (c *Client) Session(ctx context.Context, vm, name string) (api.Session, error) {
	var s api.Session
	err := c.Do(ctx, http.MethodGet, path("vms", vm, "sessions", name), nil, &s)
	return s, err
}

// StopSession stops a running session.
func (c *Client) StopSession(ctx context.Context, vm, name string, req api.StopSessionRequest) (api.Session, error) {
	var s api.Session
	err := c.Do(ctx, http.MethodPost, path("vms", vm, "sessions", name, "stop"), req, &s)
	return s, err
}

// ResizeSession sets the terminal size of a running tty session.
func (c *Client) ResizeSession(ctx context.Context, vm, name string, rows, cols uint16) error {
	return c.Do(ctx, http.MethodPost, path("vms", vm, "sessions", name, "resize"),
		api.ResizeSessionRequest{Rows: rows, Cols: cols}, nil)
}

// SessionLogs opens the host's copy of one output stream of a session
// ("stdout" or "stderr"), from its oldest kept byte or, with fromEnd,
// from what comes next; with follow it stays open until the session ends.
func (c *Client) SessionLogs(ctx context.Context, vm, name, stream string, fromEnd, follow bool) (io.ReadCloser, error) {
	q := url.Values{"stream": {stream}}
	if follow {
		q.Set("follow", "true")
	}
	if fromEnd {
		q.Set("from", "end")
	}
	return c.Raw(ctx, http.MethodGet, path("vms", vm, "sessions", name, "logs")+"?"+q.Encode())
}

// DetachKey is the byte that detaches `vm session attach` from a tty
// session when typed on a terminal: Ctrl-] (as telnet and virsh console).
const DetachKey = 0x1d

// AttachOptions says how AttachSession bridges a session.
type AttachOptions struct {
	Stdio Stdio
	// Signals: SIGWINCH resizes a tty session to In's terminal; SIGINT
	// and SIGTERM detach (on a raw terminal Ctrl-C is a byte the session
	// gets, not a signal).
	Signals <-chan os.Signal
}

// ErrDetached is returned by AttachSession when the client detached and
// the session goes on.
var ErrDetached = errors.New("detached")

// AttachSession bridges o.Stdio to a running session through its Unix
// socket. In pipe mode the session's stdout goes to Out and its stderr
// (from the host's log) to Err, and EOF on In detaches. In tty mode a
// terminal In is put in raw mode, resized with the window, and Ctrl-]
// detaches. It returns the session's exit code when it ended while
// attached, or ErrDetached.
func (c *Client) AttachSession(ctx context.Context, vm, name string, o AttachOptions) (int, error) {
	s, err := c.Session(ctx, vm, name)
	if err != nil {
		return 0, err
	}
	if s.State != api.SessionRunning || s.Socket == "" {
		return 0, notAttachable(s)
	}
	conn, err := net.Dial("unix", s.Socket)
	if err != nil {
		return 0, fmt.Errorf("connecting to session %s of vm %s at %s: %w", name, vm, s.Socket, err)
	}
	defer conn.Close()
	detached := make(chan struct{})
	var once sync.Once
	detach := func() { once.Do(func() { close(detached) }) }

	var in io.Reader = eofReader{}
	if o.Stdio.In != nil {
		in = o.Stdio.In
	}
	fd, isTTY := terminalFd(in)
	if s.StdinMode == "tty" && isTTY {
		if restore := makeRaw(fd); restore != nil {
			defer restore()
		}
		in = &detachReader{r: in, detach: detach}
		if rows, cols, ok := winsize(fd); ok {
			c.ResizeSession(ctx, vm, name, rows, cols)
		}
	}
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		for {
			select {
			case <-finished:
				return
			case sig := <-o.Signals:
				if sig == os.Interrupt || sig == syscall.SIGTERM {
					detach() // Ctrl-C outside a raw terminal detaches too
				}
				if sig == syscall.SIGWINCH && s.StdinMode == "tty" {
					if rows, cols, ok := winsize(fd); ok {
						c.ResizeSession(ctx, vm, name, rows, cols)
					}
				}
			}
		}
	}()
	if s.StdinMode != "tty" && o.Stdio.Err != nil {
		// Pipe and null modes: the socket carries stdout; stderr comes
		// from the host's log, from now on.
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if r, err := c.SessionLogs(lctx, vm, name, "stderr", true, true); err == nil {
			go func() {
				defer r.Close()
				io.Copy(o.Stdio.Err, r)
			}()
		}
	}
	go func() {
		if s.StdinMode != "null" {
			io.Copy(conn, in)
		} else {
			io.Copy(io.Discard, in)
		}
		detach() // EOF on In (or Ctrl-]) detaches
	}()
	ended := make(chan error, 1)
	go func() {
		out := o.Stdio.Out
		if out == nil {
			out = io.Discard
		}
		_, err := io.Copy(out, conn)
		ended <- err
	}()
	select {
	case <-detached:
		fmt.Fprintf(o.Stdio.errOut(), "\r\nbanger: detached from session %s of vm %s; it goes on (banger vm session attach %s %s)\r\n", name, vm, vm, name)
		return 0, ErrDetached
	case <-ended:
	}
	return c.attachEnded(ctx, vm, name)
}

// attachEnded says how a session whose socket closed ended.
func (c *Client) attachEnded(ctx context.Context, vm, name string) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.Session(ctx, vm, name)
		if err != nil {
			return 0, fmt.Errorf("session %s of vm %s: the connection ended and bangerd does not answer: %w", name, vm, err)
		}
		switch {
		case s.State == api.SessionExited && s.ExitCode != nil:
			return *s.ExitCode, nil
		case s.State == api.SessionLost:
			return 0, notAttachable(s)
		case time.Now().After(deadline):
			return 0, fmt.Errorf("session %s of vm %s: the connection to it ended while it still runs (bangerd restarted, or could not reach the guest agent: see banger vm inspect %s); attach again with banger vm session attach %s %s", name, vm, vm, vm, name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// notAttachable says why s, which does not run, cannot be attached.
func notAttachable(s api.Session) error {
	logs := fmt.Sprintf("its output is in banger vm session logs %s %s", s.VM, s.Name)
	if s.State == api.SessionExited && s.ExitCode != nil {
		return &api.Error{Code: api.Conflict, Message: fmt.Sprintf("session %s of vm %s has exited with code %d", s.Name, s.VM, *s.ExitCode), Hint: logs}
	}
	return &api.Error{Code: api.Conflict, Message: fmt.Sprintf("session %s of vm %s is %s: %s", s.Name, s.VM, s.State, s.Reason), Hint: logs}
}

// detachReader passes a raw terminal's input through until the detach
// key, which it holds back.
type detachReader struct {
	r      io.Reader
	detach func()
}

func (d *detachReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == DetachKey {
			d.detach()
			return i, io.EOF
		}
	}
	return n, err
}
