package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"banger/internal/guest"
)

// CommandOptions says how RunCommand runs a command in a VM.
type CommandOptions struct {
	Req guest.ExecRequest
	// AutoTTY gives the command a terminal when Stdio.In is one.
	AutoTTY bool
	Stdio   Stdio
	// Signals are forwarded to the command while it runs: the first
	// os.Interrupt as SIGINT, a second one detaches; SIGWINCH resizes the
	// command's terminal to In's; another syscall.Signal is passed on.
	Signals <-chan os.Signal
}

// RunCommand runs o.Req in vm with o.Stdio, on a terminal when the
// request asks for one (or, with AutoTTY, when In is one), and returns
// its exit code. On a raw terminal the first Ctrl-C byte reaches the
// command and a second detaches. Detaching returns 130; the command is
// then ended with the connection.
func (c *Client) RunCommand(ctx context.Context, vm string, o CommandOptions) (int, error) {
	req := o.Req
	fd, isTTY := terminalFd(o.Stdio.In)
	if isTTY && o.AutoTTY {
		req.TTY = true
	}
	if req.TTY {
		if rows, cols, ok := winsize(fd); ok {
			req.Rows, req.Cols = rows, cols
		}
	}
	// The command outlives ctx (cancelled at the first Ctrl-C): it ends
	// by itself, or when a second Ctrl-C detaches.
	e, err := c.OpenExec(context.WithoutCancel(ctx), vm, req)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	detached := make(chan struct{})
	var once sync.Once
	detach := func() { once.Do(func() { close(detached) }) }
	var stdin io.Reader = eofReader{}
	if o.Stdio.In != nil {
		stdin = o.Stdio.In
	}
	if req.TTY && isTTY {
		if restore := makeRaw(fd); restore != nil {
			defer restore()
			// A raw terminal sends Ctrl-C as a byte, not SIGINT: the
			// first goes to the guest's terminal, a second detaches.
			stdin = &ctrlCReader{r: stdin, detach: detach}
		}
	}
	go e.CopyStdin(stdin)
	finished := make(chan struct{})
	defer close(finished)
	go forwardSignals(e, o.Signals, fd, detach, finished)
	type result struct {
		st  guest.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.Wait(o.Stdio.Out, o.Stdio.Err)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		return r.st.Code, r.err
	case <-detached:
		fmt.Fprintf(o.Stdio.errOut(), "\nbanger: detached from the command in vm %s\n", vm)
		return 130, nil
	}
}

// forwardSignals passes sigs on to e until finished is closed; a second
// os.Interrupt calls detach instead. SIGWINCH resizes e's terminal to the
// size of the terminal fd.
func forwardSignals(e *Exec, sigs <-chan os.Signal, fd int, detach func(), finished <-chan struct{}) {
	interrupts := 0
	for {
		var s os.Signal
		select {
		case <-finished:
			return
		case s = <-sigs:
		}
		switch s {
		case syscall.SIGWINCH:
			if rows, cols, ok := winsize(fd); ok {
				e.Resize(rows, cols)
			}
		case os.Interrupt:
			if interrupts++; interrupts > 1 {
				detach()
				return
			}
			e.Signal(syscall.SIGINT)
		default:
			if sig, ok := s.(syscall.Signal); ok {
				e.Signal(sig)
			}
		}
	}
}

// execQuiet runs argv in vm with no stdin, its output (both streams) to out.
func (c *Client) execQuiet(ctx context.Context, vm string, argv []string, out io.Writer) (int, error) {
	e, err := c.OpenExec(ctx, vm, guest.ExecRequest{Argv: argv})
	if err != nil {
		return 0, err
	}
	defer e.Close()
	go e.CopyStdin(eofReader{})
	st, err := e.Wait(out, out)
	return st.Code, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// ctrlCReader passes a raw terminal's input through and calls detach at
// the second Ctrl-C byte (0x03), which it holds back.
type ctrlCReader struct {
	r      io.Reader
	seen   int
	detach func()
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] != 3 {
			continue
		}
		if c.seen++; c.seen > 1 {
			c.detach()
			return i, err
		}
	}
	return n, err
}
