// Package guest is the protocol between bangerd and banger-agent, and the
// host-side client of it.
//
// The host reaches the agent over one byte stream (a virtio-serial port or
// a vsock connection) and runs a yamux session over it: the host is the
// yamux client, the agent the server. Every request is one yamux stream.
// A stream carries frames ([1 byte type][4 byte big-endian length]
// [payload]); the first frame of a stream is always a FrameRequest, and
// what follows depends on the operation (see Op).
//
// The framing is independent of yamux so that the daemon can splice exec
// streams between its own clients and the agent frame by frame.
package guest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// FrameType tells what a frame's payload is.
type FrameType byte

// Frame types. The direction is given as host->guest or guest->host.
const (
	// FrameRequest (host->guest) is the JSON Request that opens a stream.
	FrameRequest FrameType = 1
	// FrameResponse (guest->host) is the JSON Response to a Request.
	FrameResponse FrameType = 2
	// FrameError (guest->host) is a JSON RemoteError; it ends the operation.
	FrameError FrameType = 3
	// FrameStdin (host->guest) carries bytes for an exec'd process's stdin.
	FrameStdin FrameType = 4
	// FrameStdout (guest->host) carries a process's stdout (or its
	// terminal output in tty mode).
	FrameStdout FrameType = 5
	// FrameStderr (guest->host) carries a process's stderr.
	FrameStderr FrameType = 6
	// FrameData (both ways) carries file or tar content.
	FrameData FrameType = 7
	// FrameEOF (both ways, empty) ends stdin or file content.
	FrameEOF FrameType = 8
	// FrameResize (host->guest) is a JSON WindowSize for a tty exec.
	FrameResize FrameType = 9
	// FrameSignal (host->guest) is a JSON Signal to deliver to the exec'd
	// process group.
	FrameSignal FrameType = 10
	// FrameExit (guest->host) is the JSON ExitStatus that ends an exec.
	FrameExit FrameType = 11
)

var frameNames = map[FrameType]string{
	FrameRequest: "request", FrameResponse: "response", FrameError: "error",
	FrameStdin: "stdin", FrameStdout: "stdout", FrameStderr: "stderr",
	FrameData: "data", FrameEOF: "eof", FrameResize: "resize",
	FrameSignal: "signal", FrameExit: "exit",
}

// String returns the frame type's name.
func (t FrameType) String() string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

const (
	// MaxFrameSize is the largest payload a frame may carry. Readers
	// reject larger frames.
	MaxFrameSize = 1 << 20
	// ChunkSize is the payload size writers use for streamed content.
	ChunkSize = 32 << 10
	// frameHeaderSize is the type byte plus the length.
	frameHeaderSize = 5
)

// ErrFrameTooLarge reports a frame whose length exceeds MaxFrameSize.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrNoAnswer reports an agent that left a request unanswered, or a
// frame unfinished, past its bound: a guest that is broken or hostile
// (its connection still answers pings, or this would be a lost one).
var ErrNoAnswer = errors.New("guest agent did not answer")

// Bounds of ReadFrameConn, variables for tests. An agent writes each
// frame whole, so the rest of one whose first byte came is a matter of
// the transport; and it answers a request that asks for an answer (hello,
// starting a command, a file's metadata) before doing anything long.
// An upload is answered once the file is on the guest's disk (synced),
// which takes longer for a large one.
var (
	FrameTimeout        = 30 * time.Second
	AnswerTimeout       = 30 * time.Second
	UploadAnswerTimeout = 2 * time.Minute
)

// ReadFrameConn is ReadFrame on conn with bounds: the first byte within
// answer (0: none, as a command's output may be long in coming) and the
// rest within FrameTimeout of it. A bound that runs out is ErrNoAnswer.
// conn's read deadline is cleared after.
func ReadFrameConn(conn net.Conn, answer time.Duration) (Frame, error) {
	defer conn.SetReadDeadline(time.Time{})
	if answer > 0 {
		conn.SetReadDeadline(time.Now().Add(answer))
	}
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		if isTimeout(err) && answer > 0 {
			return Frame{}, fmt.Errorf("%w within %s", ErrNoAnswer, answer)
		}
		if isTimeout(err) { // a deadline of the caller's own
			return Frame{}, fmt.Errorf("%w in time", ErrNoAnswer)
		}
		return Frame{}, err
	}
	conn.SetReadDeadline(time.Now().Add(FrameTimeout))
	f, err := ReadFrame(io.MultiReader(bytes.NewReader(first[:]), conn))
	if err != nil && isTimeout(err) {
		return Frame{}, fmt.Errorf("%w: a %v frame was left unfinished for %s", ErrNoAnswer, FrameType(first[0]), FrameTimeout)
	}
	return f, err
}

// isTimeout reports a read deadline that ran out (yamux says so in its
// own words).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Frame is one unit of the protocol.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// ReadFrame reads one frame from r. It returns io.EOF only when r ends
// cleanly between frames, and io.ErrUnexpectedEOF when it ends inside
// one. The payload is freshly allocated, and grows with what arrives: a
// peer that announces a large frame and sends little of it holds little
// memory (a guest could otherwise make each call hold MaxFrameSize).
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n > MaxFrameSize {
		return Frame{}, fmt.Errorf("%v frame of %d bytes: %w", FrameType(hdr[0]), n, ErrFrameTooLarge)
	}
	p := make([]byte, 0, min(n, ChunkSize))
	for len(p) < n {
		if len(p) == cap(p) {
			grown := make([]byte, len(p), min(n, 2*cap(p)))
			copy(grown, p)
			p = grown
		}
		m, err := r.Read(p[len(p):cap(p)])
		p = p[:len(p)+m]
		if err != nil && len(p) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
	}
	return Frame{Type: FrameType(hdr[0]), Payload: p}, nil
}

// WriteFrame writes one frame to w in a single Write call.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFrameSize {
		return fmt.Errorf("%v frame of %d bytes: %w", t, len(payload), ErrFrameTooLarge)
	}
	buf := make([]byte, frameHeaderSize+len(payload))
	buf[0] = byte(t)
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload)))
	copy(buf[frameHeaderSize:], payload)
	_, err := w.Write(buf)
	return err
}

// FrameWriter writes frames to one stream from several goroutines.
type FrameWriter struct {
	mu sync.Mutex // serializes writes to w
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter writing to w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame.
func (fw *FrameWriter) WriteFrame(t FrameType, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return WriteFrame(fw.w, t, payload)
}

// WriteJSON writes one frame whose payload is v encoded as JSON.
func (fw *FrameWriter) WriteJSON(t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %v frame: %w", t, err)
	}
	return fw.WriteFrame(t, b)
}

// WriteError writes a FrameError carrying err. A *RemoteError keeps its
// kind; any other error is sent as KindInternal, or KindNotExist when it
// wraps fs.ErrNotExist.
func (fw *FrameWriter) WriteError(err error) error {
	return fw.WriteJSON(FrameError, ToRemoteError(err))
}

// Chunks returns an io.Writer that sends everything written to it as
// frames of type t, at most ChunkSize bytes each.
func (fw *FrameWriter) Chunks(t FrameType) io.Writer { return chunkWriter{fw: fw, t: t} }

type chunkWriter struct {
	fw *FrameWriter
	t  FrameType
}

func (c chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := c.fw.WriteFrame(c.t, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// DecodeJSON decodes a frame's JSON payload into v, after checking that
// the frame has type want.
func DecodeJSON(f Frame, want FrameType, v any) error {
	if f.Type == FrameError && want != FrameError {
		return DecodeError(f)
	}
	if f.Type != want {
		return fmt.Errorf("unexpected %v frame, want %v", f.Type, want)
	}
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("decoding %v frame: %w", f.Type, err)
	}
	return nil
}

// DecodeError turns a FrameError into a *RemoteError. A message longer
// than MaxErrorMessage is cut (the guest may be hostile; the message ends
// up in API errors and logs).
func DecodeError(f Frame) error {
	var re RemoteError
	if err := json.Unmarshal(f.Payload, &re); err != nil {
		return fmt.Errorf("decoding error frame: %w", err)
	}
	re.Kind = truncated(re.Kind, MaxInfoField)
	re.Message = truncated(re.Message, MaxErrorMessage)
	return &re
}

// ContentReader reads the payloads of FrameData frames from a stream
// until FrameEOF, which it reports as io.EOF. A FrameError becomes its
// *RemoteError, any other frame an error, and a stream that ends before
// FrameEOF io.ErrUnexpectedEOF.
type ContentReader struct {
	r   io.Reader
	buf []byte // rest of the current frame's payload
	err error  // sticky
}

// NewContentReader returns a ContentReader reading frames from r.
func NewContentReader(r io.Reader) *ContentReader { return &ContentReader{r: r} }

func (c *ContentReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		f, err := ReadFrame(c.r)
		switch {
		case errors.Is(err, io.EOF):
			c.err = io.ErrUnexpectedEOF
		case err != nil:
			c.err = err
		case f.Type == FrameData:
			c.buf = f.Payload
		case f.Type == FrameEOF:
			c.err = io.EOF
		case f.Type == FrameError:
			c.err = DecodeError(f)
		default:
			c.err = fmt.Errorf("unexpected %v frame in content", f.Type)
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}
