package guest

import (
	"bytes"
	"crypto/rand"
	"io"
	"time"
)

// The handshake that precedes the yamux session on every connection.
//
// A virtio-serial port tells the guest that the host went away only as a
// read returning EOF, and when the host reconnects quickly (a daemon
// restart) the guest may never see it: its old yamux session would then
// meet the new host's bytes mid-stream. So both sides resynchronise in
// band, scanning the byte stream for markers that contain no zero byte
// (a yamux header starts with version 0, so a marker always breaks an old
// session):
//
//	host:  [filler] HELLO, repeated every helloInterval with growing filler
//	guest: READY for each HELLO it sees (anything else is skipped)
//	host:  on the first READY, stops sending HELLO, sends START+nonce
//	guest: START+nonce -> STARTED+nonce, then serves yamux
//	host:  skips to STARTED+nonce, then runs the yamux client
//
// The filler (0xff bytes, up to the largest yamux frame) flushes an old
// session that was left waiting for the rest of a frame.
var (
	markerHello   = []byte("\xfe\xfdbanger-hello\xfc\xfb")
	markerReady   = []byte("\xfe\xfdbanger-ready\xfc\xfb")
	markerStart   = []byte("\xfe\xfdbanger-start\xfc\xfb")
	markerStarted = []byte("\xfe\xfdbanger-began\xfc\xfb")
)

const (
	nonceSize     = 8
	helloInterval = 250 * time.Millisecond
	minFiller     = 64
	maxFiller     = 256 << 10 // yamux's default (and our) max stream window
)

// markerScanner finds markers in a byte stream, skipping everything else.
type markerScanner struct {
	r   io.Reader
	buf []byte // unread bytes
}

// next reads until one of markers is found and returns its index; the
// bytes after it stay in s.buf.
func (s *markerScanner) next(markers ...[]byte) (int, error) {
	chunk := make([]byte, 4096)
	for {
		best, at := -1, -1
		for i, m := range markers {
			if j := bytes.Index(s.buf, m); j >= 0 && (at < 0 || j < at) {
				best, at = i, j
			}
		}
		if best >= 0 {
			s.buf = s.buf[at+len(markers[best]):]
			return best, nil
		}
		// Keep only a tail that could start a marker.
		keep := 0
		for _, m := range markers {
			keep = max(keep, len(m)-1)
		}
		if len(s.buf) > keep {
			s.buf = append(s.buf[:0], s.buf[len(s.buf)-keep:]...)
		}
		n, err := s.r.Read(chunk)
		s.buf = append(s.buf, chunk[:n]...)
		if err != nil && n == 0 {
			return -1, err
		}
	}
}

// readN reads exactly n bytes, from s.buf first.
func (s *markerScanner) readN(n int) ([]byte, error) {
	for len(s.buf) < n {
		chunk := make([]byte, n-len(s.buf))
		m, err := s.r.Read(chunk)
		s.buf = append(s.buf, chunk[:m]...)
		if err != nil && len(s.buf) < n {
			return nil, err
		}
	}
	out := append([]byte(nil), s.buf[:n]...)
	s.buf = s.buf[n:]
	return out, nil
}

// rest is a reader giving the bytes left after the handshake, then r.
func (s *markerScanner) rest() io.Reader {
	if len(s.buf) == 0 {
		return s.r
	}
	return io.MultiReader(bytes.NewReader(s.buf), s.r)
}

// AcceptHost runs the agent's half of the handshake on a new connection:
// it answers the host's HELLOs until the host sends START. It returns the
// reader to run the session on (it may hold bytes read past the
// handshake). Close rw to abort it.
func AcceptHost(rw io.ReadWriter) (io.Reader, error) {
	s := &markerScanner{r: rw}
	for {
		which, err := s.next(markerHello, markerStart)
		if err != nil {
			return nil, err
		}
		if which == 0 {
			if _, err := rw.Write(markerReady); err != nil {
				return nil, err
			}
			continue
		}
		nonce, err := s.readN(nonceSize)
		if err != nil {
			return nil, err
		}
		if _, err := rw.Write(append(append([]byte(nil), markerStarted...), nonce...)); err != nil {
			return nil, err
		}
		return s.rest(), nil
	}
}

// connectGuest runs the host's half of the handshake. It returns the
// reader to run the session on. Close rw to abort it.
func connectGuest(rw io.ReadWriter) (io.Reader, error) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		filler := minFiller
		for {
			msg := append(bytes.Repeat([]byte{0xff}, filler), markerHello...)
			if _, err := rw.Write(msg); err != nil {
				return
			}
			filler = min(filler*4, maxFiller)
			select {
			case <-stop:
				return
			case <-time.After(helloInterval):
			}
		}
	}()
	s := &markerScanner{r: rw}
	_, err := s.next(markerReady)
	close(stop)
	<-stopped // no HELLO may follow START
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	if _, err := rw.Write(append(append([]byte(nil), markerStart...), nonce...)); err != nil {
		return nil, err
	}
	want := append(append([]byte(nil), markerStarted...), nonce...)
	if _, err := s.next(want); err != nil {
		return nil, err
	}
	return s.rest(), nil
}
