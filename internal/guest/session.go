package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// sessionName is the form of a session name (see SessionStartRequest).
var sessionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateSessionName reports whether name can name a session; the error
// (a KindInvalid *RemoteError) says what a name may be.
func ValidateSessionName(name string) error {
	if sessionName.MatchString(name) {
		return nil
	}
	return &RemoteError{Kind: KindInvalid, Message: fmt.Sprintf(
		"bad session name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)}
}

// SessionStart starts a session in the guest and returns once its process
// runs. A name a running session holds fails with an error matching
// fs.ErrExist; a command that is not found, or a working directory that
// does not exist, with one matching fs.ErrNotExist.
func (c *Client) SessionStart(ctx context.Context, req SessionStartRequest) (SessionInfo, error) {
	if len(req.Argv) == 0 {
		return SessionInfo{}, fmt.Errorf("starting session %s: empty command", req.Name)
	}
	resp, err := c.oneShot(ctx, Request{Op: OpSessionStart, SessionStart: &req})
	if err != nil {
		return SessionInfo{}, sessionError("starting session", req.Name, err)
	}
	if resp.Session == nil {
		return SessionInfo{}, fmt.Errorf("starting session %s: agent sent no session", req.Name)
	}
	return *resp.Session, nil
}

// sessionError gives err the call's context. The agent's own errors name
// the session already and are returned as they are.
func sessionError(what, name string, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("%s %s: %w", what, name, err)
}

// SessionList returns the guest's sessions, oldest first.
func (c *Client) SessionList(ctx context.Context) ([]SessionInfo, error) {
	resp, err := c.oneShot(ctx, Request{Op: OpSessionList})
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	return resp.Sessions, nil
}

// SessionControl signals, resizes or closes the stdin of a session, and
// returns what the agent knows of it afterwards (a request with nothing
// to do just returns that). An unknown session fails with an error
// matching fs.ErrNotExist.
func (c *Client) SessionControl(ctx context.Context, req SessionControlRequest) (SessionInfo, error) {
	resp, err := c.oneShot(ctx, Request{Op: OpSessionControl, SessionControl: &req})
	if err != nil {
		return SessionInfo{}, sessionError("session", req.Name, err)
	}
	if resp.Session == nil {
		return SessionInfo{}, fmt.Errorf("session %s: agent sent no session", req.Name)
	}
	return *resp.Session, nil
}

// oneShot sends req and reads its single Response, due within
// AnswerTimeout: the session requests are answered at once.
func (c *Client) oneShot(ctx context.Context, req Request) (Response, error) {
	cl, err := c.start(ctx, req)
	if err != nil {
		return Response{}, err
	}
	defer cl.close()
	return cl.answer()
}

// SessionStream is one attach to a session. Its methods that send (Write,
// Resize) are safe to call concurrently with each other and with Recv.
// Closing it, or the end of the context given to SessionAttach, ends the
// attach only: the session goes on.
type SessionStream struct {
	cl  *call
	err error // sticky, once Recv has returned the last frame or an error
}

// SessionAttach attaches to a session and returns the stream with what
// the agent knew of the session when it attached. An unknown session
// fails with an error matching fs.ErrNotExist.
func (c *Client) SessionAttach(ctx context.Context, req SessionAttachRequest) (*SessionStream, SessionInfo, error) {
	cl, err := c.start(ctx, Request{Op: OpSessionAttach, SessionAttach: &req})
	if err != nil {
		return nil, SessionInfo{}, sessionError("attaching to session", req.Name, err)
	}
	resp, err := cl.answer()
	if err == nil && resp.Session == nil {
		err = errors.New("agent sent no session")
	}
	if err != nil {
		cl.close()
		return nil, SessionInfo{}, sessionError("attaching to session", req.Name, err)
	}
	return &SessionStream{cl: cl}, *resp.Session, nil
}

// Recv returns the next frame from the agent: FrameStdout or FrameStderr
// (output, in the order it was written), then FrameExit (a JSON
// ExitStatus: the session ended and all its output was sent) or, without
// Follow, FrameEOF. After either, Recv returns io.EOF. A FrameError
// becomes its *RemoteError; a stream that ends early yields an error
// wrapping ErrConnectionLost (or the context's error).
func (s *SessionStream) Recv() (Frame, error) {
	if s.err != nil {
		return Frame{}, s.err
	}
	f, err := s.cl.read()
	switch {
	case err != nil:
		s.err = err
	case f.Type == FrameStdout, f.Type == FrameStderr:
		return f, nil
	case f.Type == FrameExit, f.Type == FrameEOF:
		s.err = io.EOF
		return f, nil
	case f.Type == FrameError:
		s.err = DecodeError(f)
	default:
		s.err = fmt.Errorf("unexpected %v frame in session stream", f.Type)
	}
	return Frame{}, s.err
}

// Write sends p to the session's stdin (pipe or tty mode; the attach must
// have been made with Input). Writes of several attaches interleave by
// chunk of at most ChunkSize bytes.
func (s *SessionStream) Write(p []byte) (int, error) {
	n, err := s.cl.fw.Chunks(FrameStdin).Write(p)
	if err != nil {
		return n, s.cl.wrap("writing to session", err)
	}
	return n, nil
}

// Resize changes the terminal size of a tty session.
func (s *SessionStream) Resize(rows, cols uint16) error {
	if err := s.cl.fw.WriteJSON(FrameResize, WindowSize{Rows: rows, Cols: cols}); err != nil {
		return s.cl.wrap("resizing", err)
	}
	return nil
}

// Close ends the attach. The session goes on.
func (s *SessionStream) Close() error {
	s.cl.close()
	return nil
}
