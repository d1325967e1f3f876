package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// ExecStream is one running command in the guest. Its methods that send
// (Write, CloseStdin, Resize, Signal) are safe to call concurrently with
// each other and with Recv or Wait. The stream lives until Close or until
// the context given to OpenExec is done, which kills the command.
type ExecStream struct {
	cl  *call
	pid int
}

// OpenExec starts req in the guest and returns once the process runs.
// A command that is not found still starts: it exits with 127 and a
// shell-like message on stderr. A missing working directory is an error.
func (c *Client) OpenExec(ctx context.Context, req ExecRequest) (*ExecStream, error) {
	if len(req.Argv) == 0 {
		return nil, errors.New("exec: empty argv")
	}
	cl, err := c.start(ctx, Request{Op: OpExec, Exec: &req})
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	resp, err := cl.answer()
	if err != nil {
		cl.close()
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	return &ExecStream{cl: cl, pid: resp.PID}, nil
}

// PID is the process id in the guest (0 for a command that was not found).
func (s *ExecStream) PID() int { return s.pid }

// Write sends p to the process's stdin.
func (s *ExecStream) Write(p []byte) (int, error) {
	n, err := s.cl.fw.Chunks(FrameStdin).Write(p)
	if err != nil {
		return n, s.cl.wrap("writing stdin", err)
	}
	return n, nil
}

// CloseStdin closes the process's stdin (in tty mode it types ^D).
func (s *ExecStream) CloseStdin() error {
	if err := s.cl.fw.WriteFrame(FrameEOF, nil); err != nil {
		return s.cl.wrap("closing stdin", err)
	}
	return nil
}

// Resize changes the terminal size of a tty exec.
func (s *ExecStream) Resize(rows, cols uint16) error {
	if err := s.cl.fw.WriteJSON(FrameResize, WindowSize{Rows: rows, Cols: cols}); err != nil {
		return s.cl.wrap("resizing", err)
	}
	return nil
}

// Signal delivers sig to the process group of the command.
func (s *ExecStream) Signal(sig syscall.Signal) error {
	if err := s.cl.fw.WriteJSON(FrameSignal, Signal{Signal: int(sig)}); err != nil {
		return s.cl.wrap("signalling", err)
	}
	return nil
}

// Recv returns the next frame from the agent: FrameStdout, FrameStderr or,
// last, FrameExit. A FrameError becomes an error. A stream that ends before
// FrameExit yields an error wrapping ErrConnectionLost (or ctx's error).
func (s *ExecStream) Recv() (Frame, error) {
	f, err := s.cl.read()
	if err != nil {
		return Frame{}, err
	}
	switch f.Type {
	case FrameStdout, FrameStderr, FrameExit:
		return f, nil
	case FrameError:
		return Frame{}, DecodeError(f)
	}
	return Frame{}, fmt.Errorf("unexpected %v frame in exec stream", f.Type)
}

// Wait copies the command's output to stdout and stderr (nil discards)
// until it exits, and returns how it exited. If writing to stdout or
// stderr fails, Wait closes the stream, which kills the command.
func (s *ExecStream) Wait(stdout, stderr io.Writer) (ExitStatus, error) {
	for {
		f, err := s.Recv()
		if err != nil {
			return ExitStatus{}, fmt.Errorf("exec: %w", err)
		}
		var w io.Writer
		switch f.Type {
		case FrameExit:
			var st ExitStatus
			if err := DecodeJSON(f, FrameExit, &st); err != nil {
				return ExitStatus{}, fmt.Errorf("exec: %w", err)
			}
			return st, nil
		case FrameStdout:
			w = stdout
		case FrameStderr:
			w = stderr
		}
		if w == nil {
			continue
		}
		if _, err := w.Write(f.Payload); err != nil {
			_ = s.Close()
			return ExitStatus{}, fmt.Errorf("exec: writing %v: %w", f.Type, err)
		}
	}
}

// Close ends the stream. If the command still runs, the agent kills its
// process group.
func (s *ExecStream) Close() error {
	s.cl.close()
	return nil
}

// Exec runs req in the guest, streaming stdin (nil: empty) to it and its
// output to stdout and stderr (nil discards), and returns its exit code:
// 128+N when it died of signal N, 127 when it was not found. The error is
// non-nil only when the command could not be run or the connection failed;
// then the command is killed. Exec does not wait for stdin to reach EOF
// once the command has exited.
func (c *Client) Exec(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s, err := c.OpenExec(ctx, req)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	go func() {
		if stdin != nil {
			if _, err := io.Copy(s, stdin); err != nil {
				return
			}
		}
		_ = s.CloseStdin()
	}()
	st, err := s.Wait(stdout, stderr)
	if err != nil {
		return 0, err
	}
	return st.Code, nil
}
