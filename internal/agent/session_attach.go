package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/creack/pty"

	"banger/internal/guest"
)

// attachment is one attach stream: what it reads and how far it got.
type attachment struct {
	ss    *session
	fw    *guest.FrameWriter
	files [2]*os.File // its own descriptors on the output files; nil: not sent
	off   [2]int64    // next byte to send, per stream
	next  int64       // the first run of the session's writeOrder not yet sent in full
	buf   []byte
	input bool // the host may write

	done chan struct{} // closed when the host's side ended
	fail error         // why, when the host broke the protocol; set before done closes
}

// errAttachEnded stops sending when the host's side ended.
var errAttachEnded = errors.New("attach ended")

// outputSnapshot is a session's output state at one moment.
type outputSnapshot struct {
	base    [2]int64 // the writeOrder's
	dropped int64
	first   int64 // index (counting dropped ones) of runs[0]
	runs    []run
	size    [2]int64
	exit    *guest.ExitStatus
	changed <-chan struct{}
}

// snapshotLocked copies the output state, with the runs from index from.
func (ss *session) snapshotLocked(from int64) outputSnapshot {
	o := &ss.order
	i := min(max(from-o.dropped, 0), int64(len(o.runs)))
	return outputSnapshot{base: o.base, dropped: o.dropped, first: o.dropped + i,
		runs: slices.Clone(o.runs[i:]), size: ss.size, exit: ss.exit, changed: ss.changed}
}

// sessionAttach runs one OpSessionAttach stream.
func (s *Server) sessionAttach(conn net.Conn, fw *guest.FrameWriter, req *guest.SessionAttachRequest) error {
	a, err := s.openAttachment(req)
	if err != nil {
		return fw.WriteError(err)
	}
	defer closeFiles(a.files[:])
	a.fw, a.buf, a.input, a.done = fw, make([]byte, guest.ChunkSize), req.Input, make(chan struct{})

	ss := a.ss
	ss.mu.Lock()
	snap := ss.snapshotLocked(0)
	for i, o := range [2]int64{req.StdoutOffset, req.StderrOffset} {
		switch {
		case o < 0:
			a.off[i] = snap.size[i]
		case o > snap.size[i]:
			ss.mu.Unlock()
			return fw.WriteError(invalid("session %q: %s offset %d is past the %d bytes written",
				req.Name, streamFiles[i], o, snap.size[i]))
		default:
			a.off[i] = o
		}
	}
	if req.Input {
		ss.attached++
		defer func() {
			ss.mu.Lock()
			ss.attached--
			ss.mu.Unlock()
		}()
	}
	info := ss.infoLocked()
	ss.mu.Unlock()

	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{Session: &info}); err != nil {
		return err
	}
	go a.readInput(conn)
	return a.run(snap, req.Follow)
}

// openAttachment finds the session and opens the output files to send.
// It holds the table lock so that the files are the session's: a start
// replacing it waits.
func (s *Server) openAttachment(req *guest.SessionAttachRequest) (*attachment, error) {
	t := &s.sessions
	t.mu.Lock()
	defer t.mu.Unlock()
	ss, err := t.lookupLocked(req.Name)
	if err != nil {
		return nil, err
	}
	a := &attachment{ss: ss}
	want := [2]bool{req.Stdout, req.Stderr}
	if !req.Stdout && !req.Stderr {
		want = [2]bool{true, true}
	}
	for i, name := range streamFiles {
		if !want[i] {
			continue
		}
		if a.files[i], err = os.Open(filepath.Join(ss.dir, name)); err != nil {
			closeFiles(a.files[:])
			return nil, fmt.Errorf("session %q output: %w", req.Name, err)
		}
	}
	return a, nil
}

// run sends output from snap on, following the session when asked, and
// ends the stream with FrameExit (the session ended) or FrameEOF (not
// following).
func (a *attachment) run(snap outputSnapshot, follow bool) error {
	for {
		if err := a.send(snap); err != nil {
			return a.ended(err)
		}
		if !follow {
			return a.fw.WriteFrame(guest.FrameEOF, nil)
		}
		if snap.exit != nil {
			return a.fw.WriteJSON(guest.FrameExit, *snap.exit)
		}
		select {
		case <-snap.changed:
		case <-a.done:
			return a.ended(errAttachEnded)
		}
		a.ss.mu.Lock()
		snap = a.ss.snapshotLocked(a.next)
		a.ss.mu.Unlock()
	}
}

// ended is how the attach ends after err: quietly if the host left,
// with a FrameError if it broke the protocol.
func (a *attachment) ended(err error) error {
	select {
	case <-a.done:
		if a.fail != nil {
			return a.fw.WriteError(a.fail)
		}
		return nil
	default:
		return err
	}
}

// send sends the output snap holds beyond the attach's offsets, in the
// order it was written.
func (a *attachment) send(snap outputSnapshot) error {
	if a.next < snap.dropped {
		for i := range a.off {
			if err := a.copy(i, snap.base[i]); err != nil {
				return err
			}
		}
		a.next = snap.dropped
	}
	for _, r := range snap.runs {
		if err := a.copy(r.stream, r.end); err != nil {
			return err
		}
	}
	if n := len(snap.runs); n > 0 {
		a.next = snap.first + int64(n) - 1 // the last run may still grow
	}
	return nil
}

// copy sends stream's output from the attach's offset up to end.
func (a *attachment) copy(stream int, end int64) error {
	f := a.files[stream]
	if f == nil {
		return nil
	}
	for a.off[stream] < end {
		select {
		case <-a.done:
			return errAttachEnded
		default:
		}
		n := int(min(int64(len(a.buf)), end-a.off[stream]))
		m, err := f.ReadAt(a.buf[:n], a.off[stream])
		if m < n {
			return fmt.Errorf("reading session output: %w", err)
		}
		if err := a.fw.WriteFrame(streamFrames[stream], a.buf[:m]); err != nil {
			return err
		}
		a.off[stream] += int64(m)
	}
	return nil
}

// readInput handles the host's frames until its side ends: stdin and
// resizes with Input, nothing else. A frame that is not allowed ends the
// attach with a FrameError; the session goes on.
func (a *attachment) readInput(conn net.Conn) {
	for {
		f, err := guest.ReadFrame(conn)
		if err != nil {
			close(a.done)
			// Unblock a send to a host that no longer reads.
			_ = conn.SetWriteDeadline(time.Now())
			return
		}
		if err := a.handleInput(f); err != nil {
			a.fail = err
			close(a.done)
			return
		}
	}
}

func (a *attachment) handleInput(f guest.Frame) error {
	ss := a.ss
	switch f.Type {
	case guest.FrameStdin, guest.FrameResize:
		if !a.input {
			return invalid("session %q: attached without input; attach with input to write", ss.info.Name)
		}
	case guest.FrameEOF:
		return nil // the host stopped writing; closing stdin is a control request
	default:
		return invalid("session %q: unexpected %v frame in an attach", ss.info.Name, f.Type)
	}
	if f.Type == guest.FrameResize {
		var ws guest.WindowSize
		if err := guest.DecodeJSON(f, guest.FrameResize, &ws); err != nil {
			return invalid("%v", err)
		}
		if ss.proc.tty != nil && ws.Rows != 0 && ws.Cols != 0 {
			_ = pty.Setsize(ss.proc.tty, &pty.Winsize{Rows: ws.Rows, Cols: ws.Cols})
		}
		return nil
	}
	if ss.proc.stdin == nil {
		return invalid("session %q has no stdin (stdin mode %s): input is refused", ss.info.Name, ss.info.StdinMode)
	}
	// Input after the session's stdin closed (or it exited) is dropped.
	_ = ss.writeInput(f.Payload)
	return nil
}
