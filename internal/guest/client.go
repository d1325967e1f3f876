package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// ErrConnectionLost reports that the agent connection ended in the middle
// of a call.
var ErrConnectionLost = errors.New("guest agent connection lost")

// YamuxConfig is the yamux configuration both sides use. Keepalives are
// off (a guest under emulation can be slow to answer pings; a dead
// transport shows as EOF), stream opens wait for as long as the caller's
// context allows, and yamux's own logging goes to logger at debug level.
func YamuxConfig(logger *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.StreamOpenTimeout = 0
	cfg.ConnectionWriteTimeout = 30 * time.Second
	cfg.LogOutput = nil
	cfg.Logger = log.New(slogWriter{logger}, "", 0)
	return cfg
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	if w.l != nil {
		w.l.Debug(string(p))
	}
	return len(p), nil
}

// Client is the host side of the agent protocol over one connection. It
// is safe for concurrent use; each call runs on its own yamux stream.
type Client struct {
	conn   net.Conn
	key    []byte
	logger *slog.Logger
	ready  chan struct{} // closed once the handshake has ended
	sess   *yamux.Session
	err    error         // why the handshake failed; set before ready closes
	done   chan struct{} // closed once the session is over

	mu     sync.Mutex
	reason error // why Abandon ended the client; calls fail with it
}

// NewClient starts talking to the agent over conn, proving knowledge of
// the VM's agent key (KeySize bytes) and checking that the agent knows it
// too. It returns at once: the handshake (which waits for the agent to
// come up) runs in the background, and calls wait for it within their own
// context. Closing the Client closes conn. A nil logger discards logs.
func NewClient(conn net.Conn, key []byte, logger *slog.Logger) (*Client, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("agent key of %d bytes, want %d", len(key), KeySize)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{conn: conn, key: append([]byte(nil), key...), logger: logger, ready: make(chan struct{}), done: make(chan struct{})}
	go c.handshake()
	return c, nil
}

// handshake resynchronises with the agent, then starts the yamux session.
func (c *Client) handshake() {
	defer close(c.ready)
	r, err := connectGuest(c.conn, c.key)
	if err == nil {
		c.sess, err = yamux.Client(readConn{Conn: c.conn, r: r}, YamuxConfig(c.logger))
	}
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrVersionMismatch) {
			c.err = fmt.Errorf("agent handshake: %w", err)
		} else {
			c.err = fmt.Errorf("%w (handshake: %v)", ErrConnectionLost, err)
		}
		c.conn.Close()
		close(c.done)
		return
	}
	c.logger.Debug("agent session started")
	go c.refuseGuestStreams()
	go func() {
		<-c.sess.CloseChan()
		close(c.done)
	}()
}

// refuseGuestStreams ends the session when the agent opens a stream of
// its own: the protocol has none, and each one the host left unaccepted
// could hold a stream window of guest data in the daemon's memory.
func (c *Client) refuseGuestStreams() {
	st, err := c.sess.AcceptStream()
	if err != nil {
		return
	}
	c.logger.Warn("guest agent opened a stream; closing its session")
	st.Close()
	c.sess.Close()
}

// readConn reads from r (the handshake's leftover, then the conn).
type readConn struct {
	net.Conn
	r io.Reader
}

func (c readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// session waits for the handshake within ctx.
func (c *Client) session(ctx context.Context) (*yamux.Session, error) {
	select {
	case <-c.ready:
		return c.sess, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the agent: %w", ctx.Err())
	}
}

// Close ends the session and the connection. Calls in flight fail.
func (c *Client) Close() error {
	err := c.conn.Close()
	select {
	case <-c.ready:
		if c.sess != nil {
			return c.sess.Close()
		}
	default:
	}
	return err
}

// Abandon ends the client like Close; the calls in flight, and any
// made later, fail with an ErrConnectionLost that gives reason.
func (c *Client) Abandon(reason error) {
	c.mu.Lock()
	if c.reason == nil {
		c.reason = reason
	}
	c.mu.Unlock()
	c.Close()
}

// Abandoned is Abandon's reason, or nil.
func (c *Client) Abandoned() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Ping checks that the agent's end of the session answers. It waits
// for the pong at most the session's write timeout (30 s), or until ctx
// is done.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	sess, err := c.session(ctx)
	if err != nil {
		return 0, err
	}
	type pong struct {
		rtt time.Duration
		err error
	}
	ch := make(chan pong, 1)
	go func() {
		rtt, err := sess.Ping()
		ch <- pong{rtt, err}
	}()
	select {
	case p := <-ch:
		if p.err != nil {
			return 0, fmt.Errorf("ping: %w", lostErr(p.err))
		}
		return p.rtt, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("ping: %w", ctx.Err())
	}
}

// Done is closed when the client is finished: Close, or the connection
// dropped.
func (c *Client) Done() <-chan struct{} { return c.done }

// OpenStream opens a raw stream. The caller writes the FrameRequest and
// speaks the operation's frames itself; this is what the daemon splices.
func (c *Client) OpenStream(ctx context.Context) (net.Conn, error) {
	sess, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r := c.Abandoned(); r != nil {
		return nil, fmt.Errorf("opening agent stream: %w (%w)", ErrConnectionLost, r)
	}
	// yamux's OpenStream takes no context: it can wait for a free SYN slot
	// (a guest that never acks) or for the transport to take the SYN (a
	// guest that never reads). Run it aside and give up when ctx is done;
	// a stream that opens after that is closed.
	type opened struct {
		s   *yamux.Stream
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := sess.OpenStream()
		ch <- opened{s, err}
	}()
	select {
	case o := <-ch:
		if o.err != nil {
			return nil, fmt.Errorf("opening agent stream: %w", lostErr(o.err))
		}
		return o.s, nil
	case <-ctx.Done():
		go func() {
			if o := <-ch; o.s != nil {
				o.s.Close()
			}
		}()
		return nil, fmt.Errorf("opening agent stream: %w", ctx.Err())
	}
}

// call is one operation's stream. Its context watcher unblocks reads and
// writes (and closes the stream) when ctx is done.
type call struct {
	c    *Client
	conn net.Conn
	fw   *FrameWriter
	ctx  context.Context
	stop func() bool
}

// start opens a stream, sends req and arms ctx.
func (c *Client) start(ctx context.Context, req Request) (*call, error) {
	conn, err := c.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	cl := &call{c: c, conn: conn, fw: NewFrameWriter(conn), ctx: ctx}
	cl.stop = context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Now())
		_ = conn.Close()
	})
	req.Version = ProtocolVersion
	if err := cl.fw.WriteJSON(FrameRequest, req); err != nil {
		cl.close()
		return nil, cl.wrap("sending request", err)
	}
	return cl, nil
}

// close releases the stream; it tells the agent the call is over.
func (cl *call) close() {
	cl.stop()
	_ = cl.conn.Close()
}

// read reads the next frame, mapping a stream end to ErrConnectionLost;
// a frame begun must be finished within FrameTimeout.
func (cl *call) read() (Frame, error) { return cl.readWithin(0) }

// readWithin is read with the frame's first byte due within answer (0:
// no bound).
func (cl *call) readWithin(answer time.Duration) (Frame, error) {
	f, err := ReadFrameConn(cl.conn, answer)
	if cl.ctx.Err() != nil {
		// ReadFrameConn cleared the deadline the context's end set.
		_ = cl.conn.SetReadDeadline(time.Now())
	}
	if err != nil {
		if errors.Is(err, ErrNoAnswer) && cl.ctx.Err() == nil {
			return Frame{}, err
		}
		return Frame{}, cl.wrap("reading from agent", err)
	}
	return f, nil
}

// wrap explains err: the context's error when ctx is done, else err with
// transport ends mapped to ErrConnectionLost.
func (cl *call) wrap(what string, err error) error {
	if cerr := cl.ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	if r := cl.c.Abandoned(); r != nil {
		return fmt.Errorf("%s: %w (%w)", what, ErrConnectionLost, r)
	}
	return fmt.Errorf("%s: %w", what, lostErr(err))
}

func lostErr(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, yamux.ErrSessionShutdown), errors.Is(err, yamux.ErrConnectionReset),
		errors.Is(err, yamux.ErrStreamClosed), errors.Is(err, yamux.ErrTimeout):
		return fmt.Errorf("%w (%v)", ErrConnectionLost, err)
	}
	return err
}

// response reads the Response that answers a request.
func (cl *call) response() (Response, error) { return cl.responseWithin(0) }

// answer is response for a request the agent answers before it does
// anything long: within AnswerTimeout.
func (cl *call) answer() (Response, error) { return cl.responseWithin(AnswerTimeout) }

func (cl *call) responseWithin(d time.Duration) (Response, error) {
	f, err := cl.readWithin(d)
	if err != nil {
		return Response{}, err
	}
	var resp Response
	if err := DecodeJSON(f, FrameResponse, &resp); err != nil {
		return Response{}, err
	}
	return resp, nil
}

// Hello asks the agent who it is. It returns an error wrapping
// ErrVersionMismatch (a *VersionError, with Info filled in) when the agent
// speaks another protocol version.
func (c *Client) Hello(ctx context.Context) (Info, error) {
	cl, err := c.start(ctx, Request{Op: OpHello})
	if err != nil {
		return Info{}, fmt.Errorf("hello: %w", err)
	}
	defer cl.close()
	resp, err := cl.answer()
	if err != nil {
		return Info{}, fmt.Errorf("hello: %w", err)
	}
	if resp.Hello == nil {
		return Info{}, errors.New("hello: agent sent no info")
	}
	info := *resp.Hello
	info.AgentVersion = truncated(info.AgentVersion, MaxInfoField)
	info.KernelRelease = truncated(info.KernelRelease, MaxInfoField)
	info.Hostname = truncated(info.Hostname, MaxInfoField)
	if info.ProtocolVersion != ProtocolVersion {
		return info, &VersionError{Guest: info.ProtocolVersion, Host: ProtocolVersion}
	}
	return info, nil
}

// Shutdown asks the guest to sync and power off. It returns once the
// agent has acknowledged; the VM goes down shortly after.
func (c *Client) Shutdown(ctx context.Context) error {
	cl, err := c.start(ctx, Request{Op: OpShutdown})
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	defer cl.close()
	if _, err := cl.answer(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
