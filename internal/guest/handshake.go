package guest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"
)

// The handshake that precedes the yamux session on every connection, on
// every transport (vsock, hybrid vsock, virtio-serial).
//
// It does two things. First, it authenticates: the agent serves nobody
// who does not prove knowledge of the VM's key (KeySize random bytes the
// daemon made for this VM and delivered on its seed drive), and the host
// checks that the agent knows it too. The proofs are HMAC-SHA256 over
// both sides' fresh nonces, so the key never crosses the wire and a
// recorded exchange cannot be replayed on another connection.
//
// Second, it resynchronises. A virtio-serial port tells the guest that
// the host went away only as a read returning EOF, and when the host
// reconnects quickly (a daemon restart) the guest may never see it: its
// old yamux session would then meet the new host's bytes mid-stream. So
// both sides scan the byte stream for markers that contain no zero byte
// (a yamux header starts with version 0, so a marker always breaks an old
// session):
//
//	host:  [filler] HELLO, repeated with growing filler, every
//	       helloFirstInterval and then every helloInterval
//	guest: CHALLENGE+gnonce for each HELLO it sees (anything else is skipped)
//	host:  on the first CHALLENGE, stops sending HELLO and sends
//	       AUTH+hnonce+HMAC(key, "host"|gnonce|hnonce)
//	guest: checks the MAC in constant time; if it is right,
//	       ACCEPT+HMAC(key, "guest"|gnonce|hnonce), then serves yamux;
//	       if not, DENIED+hnonce, and the host gets nothing more
//	host:  skips to the ACCEPT whose MAC is right, then runs the yamux
//	       client
//
// The filler (0xff bytes, up to the largest yamux frame) flushes an old
// session that was left waiting for the rest of a frame. An agent from
// before authentication answers HELLO with READY; the host reports it as
// a *VersionError.
var (
	markerHello     = []byte("\xfe\xfdbanger-hello\xfc\xfb")
	markerReadyV1   = []byte("\xfe\xfdbanger-ready\xfc\xfb") // agents of protocol v1
	markerChallenge = []byte("\xfe\xfdbanger-chall\xfc\xfb")
	markerAuth      = []byte("\xfe\xfdbanger-auth2\xfc\xfb")
	markerAccept    = []byte("\xfe\xfdbanger-accpt\xfc\xfb")
	markerDenied    = []byte("\xfe\xfdbanger-denid\xfc\xfb")
)

const (
	// KeySize is the size of a VM's agent key.
	KeySize       = 32
	nonceSize     = 16
	macSize       = sha256.Size
	helloInterval = 250 * time.Millisecond
	// helloFirstInterval spaces the first helloFirstCount HELLOs: a
	// virtio-serial port drops what arrives while the guest has it
	// closed, as an agent does for a moment when a restored guest's
	// old session ends, and a restore should not wait helloInterval
	// for the next HELLO.
	helloFirstInterval = 40 * time.Millisecond
	helloFirstCount    = 5
	minFiller          = 64
	maxFiller          = 256 << 10 // yamux's default (and our) max stream window
	// maxDenied is how many refusals the host takes before it believes
	// one: a refusal can be stale, left on a virtio-serial port by an
	// earlier handshake.
	maxDenied = 3
)

// ErrUnauthenticated reports a handshake that failed authentication: on
// the agent's side a host without the right key, on the host's side an
// agent that refused the key or could not prove it knows it.
var ErrUnauthenticated = errors.New("guest agent authentication failed")

// NewKey returns a fresh random agent key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("making agent key: %w", err)
	}
	return k, nil
}

// mac is the proof one side gives: HMAC-SHA256 over the role and both
// nonces.
func mac(key []byte, role string, gnonce, hnonce []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("banger-agent-auth\x00" + role + "\x00"))
	h.Write(gnonce)
	h.Write(hnonce)
	return h.Sum(nil)
}

// markerScanner finds markers in a byte stream, skipping everything else.
// It holds at most one read chunk plus a marker's length: a peer sending
// junk cannot make it grow.
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

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// AcceptHost runs the agent's half of the handshake on a new connection:
// it challenges every HELLO until the host answers, and checks the answer
// against key. It returns the reader to run the session on (it may hold
// bytes read past the handshake). key is asked for the VM's key when the
// host's answer arrives, not before: a key swapped while the agent waited
// (a reidentify) is the one checked. A host that fails the check is sent
// a refusal and nothing else, and the error wraps ErrUnauthenticated;
// with an empty key every host fails. Close rw to abort it.
func AcceptHost(rw io.ReadWriter, keyFn func() []byte) (io.Reader, error) {
	s := &markerScanner{r: rw}
	gnonce := make([]byte, nonceSize)
	if _, err := rand.Read(gnonce); err != nil {
		return nil, err
	}
	for {
		which, err := s.next(markerHello, markerAuth)
		if err != nil {
			return nil, err
		}
		if which == 0 {
			if _, err := rw.Write(concat(markerChallenge, gnonce)); err != nil {
				return nil, err
			}
			continue
		}
		hnonce, err := s.readN(nonceSize)
		if err != nil {
			return nil, err
		}
		got, err := s.readN(macSize)
		if err != nil {
			return nil, err
		}
		key := keyFn()
		if len(key) == 0 || !hmac.Equal(got, mac(key, "host", gnonce, hnonce)) {
			_, _ = rw.Write(concat(markerDenied, hnonce))
			if len(key) == 0 {
				return nil, fmt.Errorf("%w: this agent has no key, so it refuses every host", ErrUnauthenticated)
			}
			return nil, fmt.Errorf("%w: the host's proof does not match this VM's key", ErrUnauthenticated)
		}
		if _, err := rw.Write(concat(markerAccept, mac(key, "guest", gnonce, hnonce))); err != nil {
			return nil, err
		}
		return s.rest(), nil
	}
}

// connectGuest runs the host's half of the handshake with key. It
// returns the reader to run the session on. Close rw to abort it.
func connectGuest(rw io.ReadWriter, key []byte) (io.Reader, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: agent key of %d bytes, want %d", ErrUnauthenticated, len(key), KeySize)
	}
	s := &markerScanner{r: rw}
	refused := fmt.Errorf("%w: the agent refused this VM's key", ErrUnauthenticated)
	for denied := 0; ; {
		gnonce, err := challenge(rw, s)
		if err != nil && denied > 0 {
			return nil, refused // the agent hung up after refusing
		}
		if err != nil {
			return nil, err
		}
		hnonce := make([]byte, nonceSize)
		if _, err := rand.Read(hnonce); err != nil {
			return nil, err
		}
		if _, err := rw.Write(concat(markerAuth, hnonce, mac(key, "host", gnonce, hnonce))); err != nil {
			return nil, err
		}
		ok, err := awaitVerdict(s, mac(key, "guest", gnonce, hnonce), hnonce)
		if err != nil {
			return nil, err
		}
		if ok {
			return s.rest(), nil
		}
		if denied++; denied >= maxDenied {
			return nil, refused
		}
	}
}

// challenge sends HELLOs until the agent's CHALLENGE and returns its
// nonce. An agent that answers READY predates authentication.
func challenge(rw io.ReadWriter, s *markerScanner) ([]byte, error) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		filler := minFiller
		for sent := 1; ; sent++ {
			msg := append(bytes.Repeat([]byte{0xff}, filler), markerHello...)
			if _, err := rw.Write(msg); err != nil {
				return
			}
			filler = min(filler*4, maxFiller)
			wait := helloInterval
			if sent < helloFirstCount {
				wait = helloFirstInterval
			}
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
		}
	}()
	which, err := s.next(markerChallenge, markerReadyV1)
	close(stop)
	<-stopped // no HELLO may follow AUTH
	switch {
	case err != nil:
		return nil, err
	case which == 1:
		return nil, &VersionError{Guest: 1, Host: ProtocolVersion}
	}
	return s.readN(nonceSize)
}

// awaitVerdict skips to the agent's answer to this AUTH: ACCEPT with the
// right MAC (true), or DENIED naming hnonce (false). Answers to earlier
// handshakes are skipped.
func awaitVerdict(s *markerScanner, want, hnonce []byte) (bool, error) {
	for {
		which, err := s.next(markerAccept, markerDenied)
		if err != nil {
			return false, err
		}
		n := macSize
		if which == 1 {
			n = nonceSize
		}
		got, err := s.readN(n)
		if err != nil {
			return false, err
		}
		switch {
		case which == 0 && hmac.Equal(got, want):
			return true, nil
		case which == 1 && bytes.Equal(got, hnonce):
			return false, nil
		}
	}
}
