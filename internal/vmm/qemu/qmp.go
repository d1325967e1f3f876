package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// qmpClient is a minimal QEMU Machine Protocol client: JSON objects over a
// Unix socket. It reads the greeting, negotiates capabilities, runs
// commands with an "id" and drops asynchronous events.
//
// QEMU serves one QMP client per socket at a time, so a machine keeps one
// client open and redials only when the connection breaks.
type qmpClient struct {
	conn net.Conn

	writeMu sync.Mutex // serializes writes to conn

	mu      sync.Mutex // guards the fields below
	nextID  uint64
	pending map[string]chan qmpReply
	err     error // set once the reader stops; later calls fail with it

	closed chan struct{} // closed when the reader stops
}

// qmpReply is one response to a command.
type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *qmpError       `json:"error"`
}

// qmpError is the error object QEMU returns for a failed command.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	ID     *string         `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *qmpError       `json:"error"`
}

var errQMPClosed = errors.New("qmp connection closed")

// qmpReplyTimeout bounds the wait for QEMU's reply to one command. QMP
// commands answer at once (a migration runs in the background and is
// polled), so a reply this late means QEMU is stopped or wedged. A
// caller's earlier deadline wins.
var qmpReplyTimeout = 15 * time.Second

// dialQMP connects to the QMP socket at path, reads the greeting and
// leaves command mode enabled (qmp_capabilities).
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	c, err := newQMPClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// newQMPClient runs the QMP handshake on conn and starts the reader.
func newQMPClient(ctx context.Context, conn net.Conn) (*qmpClient, error) {
	r := bufio.NewReader(conn)
	// A socket whose QMP monitor is busy with another client, or whose
	// QEMU is stopped, accepts the connection but never greets: give up
	// when ctx is done or after qmpReplyTimeout.
	conn.SetReadDeadline(time.Now().Add(qmpReplyTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	var greeting qmpMessage
	err := readQMPMessage(r, &greeting)
	if !stop() {
		return nil, fmt.Errorf("reading qmp greeting: %w", ctx.Err())
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("reading qmp greeting: none in %s: %w", qmpReplyTimeout, vmm.ErrUnresponsive)
	}
	if err != nil {
		return nil, fmt.Errorf("reading qmp greeting: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	if greeting.QMP == nil {
		return nil, errors.New("reading qmp greeting: no QMP banner")
	}
	c := &qmpClient{
		conn:    conn,
		pending: make(map[string]chan qmpReply),
		closed:  make(chan struct{}),
	}
	go c.readLoop(r)
	if _, err := c.execute(ctx, "qmp_capabilities", nil); err != nil {
		c.close()
		return nil, fmt.Errorf("negotiating qmp capabilities: %w", err)
	}
	return c, nil
}

func readQMPMessage(r *bufio.Reader, m *qmpMessage) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, m); err != nil {
		return fmt.Errorf("decoding qmp message %q: %w", line, err)
	}
	return nil
}

// readLoop routes replies to their callers until the connection fails.
func (c *qmpClient) readLoop(r *bufio.Reader) {
	var err error
	for {
		var m qmpMessage
		if err = readQMPMessage(r, &m); err != nil {
			break
		}
		if m.ID == nil {
			continue // an async event or a reply we did not ask for
		}
		c.mu.Lock()
		ch := c.pending[*m.ID]
		delete(c.pending, *m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- qmpReply{Return: m.Return, Error: m.Error}
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", errQMPClosed, err)
	c.pending = nil
	c.mu.Unlock()
	close(c.closed)
}

// execute runs one QMP command and returns its "return" value.
func (c *qmpClient) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return c.executeFD(ctx, cmd, args, -1)
}

// executeFD runs one QMP command like execute and, when fd >= 0, passes
// fd to QEMU with it (SCM_RIGHTS), as getfd wants.
func (c *qmpClient) executeFD(ctx context.Context, cmd string, args any, fd int) (json.RawMessage, error) {
	ch := make(chan qmpReply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := fmt.Sprintf("banger-%d", c.nextID)
	c.pending[id] = ch
	c.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encoding qmp %s: %w", cmd, err)
	}
	c.writeMu.Lock()
	err = c.write(append(b, '\n'), fd)
	c.writeMu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("sending qmp %s: %w", cmd, err)
	}

	timer := time.NewTimer(qmpReplyTimeout)
	defer timer.Stop()
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, rep.Error)
		}
		return rep.Return, nil
	case <-c.closed:
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	case <-timer.C:
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: no reply in %s: %w", cmd, qmpReplyTimeout, vmm.ErrUnresponsive)
	}
}

// write sends msg, with fd attached when fd >= 0.
func (c *qmpClient) write(msg []byte, fd int) error {
	if fd < 0 {
		_, err := c.conn.Write(msg)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("passing a file descriptor needs a unix socket")
	}
	n, _, err := uc.WriteMsgUnix(msg, unix.UnixRights(fd), nil)
	if err == nil && n < len(msg) {
		_, err = c.conn.Write(msg[n:])
	}
	return err
}

func (c *qmpClient) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// broken reports whether the connection has failed.
func (c *qmpClient) broken() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *qmpClient) close() error { return c.conn.Close() }
