package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// agentSide runs AcceptHost with key on one end of a pipe and reports
// its result; on success it serves hello requests.
func agentSide(t *testing.T, conn net.Conn, key []byte) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		r, err := AcceptHost(conn, func() []byte { return key })
		res <- err
		if err != nil {
			conn.Close()
			return
		}
		sess, err := yamux.Server(readConn{Conn: conn, r: r}, YamuxConfig(nil))
		if err != nil {
			return
		}
		defer sess.Close()
		for {
			st, err := sess.Accept()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				if _, err := ReadFrame(st); err == nil {
					_ = NewFrameWriter(st).WriteJSON(FrameResponse, Response{Hello: &Info{ProtocolVersion: ProtocolVersion}})
				}
			}()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return res
}

func helloWith(t *testing.T, conn net.Conn, key []byte) error {
	t.Helper()
	c, err := NewClient(conn, key, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = c.Hello(ctx)
	return err
}

func TestHandshakeAuthenticates(t *testing.T) {
	other := bytes.Repeat([]byte{0x17}, KeySize)
	tests := []struct {
		name       string
		guestKey   []byte
		hostKey    []byte
		wantGuest  string // "" means accepted
		wantClient error
	}{
		{"right key", testKey, testKey, "", nil},
		{"wrong key", testKey, other, "does not match", ErrUnauthenticated},
		{"agent without key", nil, testKey, "has no key", ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostConn, guestConn := net.Pipe()
			res := agentSide(t, guestConn, tt.guestKey)
			err := helloWith(t, hostConn, tt.hostKey)
			if tt.wantClient == nil && err != nil {
				t.Fatalf("hello: %v", err)
			}
			if tt.wantClient != nil && !errors.Is(err, tt.wantClient) {
				t.Fatalf("hello error = %v, want %v", err, tt.wantClient)
			}
			gerr := <-res
			if tt.wantGuest == "" && gerr != nil {
				t.Fatalf("agent: %v", gerr)
			}
			if tt.wantGuest != "" && (!errors.Is(gerr, ErrUnauthenticated) || !strings.Contains(gerr.Error(), tt.wantGuest)) {
				t.Fatalf("agent error = %v, want ErrUnauthenticated with %q", gerr, tt.wantGuest)
			}
		})
	}
}

func TestNewClientNeedsAKey(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := NewClient(a, nil, nil); err == nil {
		t.Fatal("a client without key was made")
	}
}

// recorder keeps everything written through it.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// TestHandshakeReplayRefused records what a real host sent to one agent
// connection and plays it to a new one: the new connection's nonce makes
// the recorded proof worthless.
func TestHandshakeReplayRefused(t *testing.T) {
	hostConn, guestConn := net.Pipe()
	res := agentSide(t, guestConn, testKey)
	rec := &recorder{Conn: hostConn}
	if err := helloWith(t, rec, testKey); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	sent := rec.out.Bytes()
	rec.mu.Unlock()
	i := bytes.Index(sent, markerAuth)
	if i < 0 {
		t.Fatal("no AUTH in the recorded exchange")
	}
	auth := sent[i : i+len(markerAuth)+nonceSize+macSize]

	attacker, guest2 := net.Pipe()
	res2 := make(chan error, 1)
	go func() { _, err := AcceptHost(guest2, keyOf(testKey)); res2 <- err; guest2.Close() }()
	go io.Copy(io.Discard, attacker)
	if _, err := attacker.Write(append(append([]byte{}, markerHello...), auth...)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res2:
		if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("replayed AUTH: agent error = %v, want ErrUnauthenticated", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent neither accepted nor refused the replay")
	}
	attacker.Close()
}

// TestHandshakeKeySwappedWhileWaiting: the agent checks the key in force
// when the host's answer arrives, so a host with the key a reidentify put
// in force after the agent began waiting is let in, and one with the old
// key is not.
func TestHandshakeKeySwappedWhileWaiting(t *testing.T) {
	newKey := bytes.Repeat([]byte{0x17}, KeySize)
	for _, tc := range []struct {
		name    string
		hostKey []byte
		want    error
	}{
		{"new key", newKey, nil},
		{"old key", testKey, ErrUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostConn, guestConn := net.Pipe()
			defer hostConn.Close()
			var mu sync.Mutex
			key := testKey
			res := make(chan error, 1)
			go func() {
				_, err := AcceptHost(guestConn, func() []byte { mu.Lock(); defer mu.Unlock(); return key })
				res <- err
				guestConn.Close()
			}()
			time.Sleep(20 * time.Millisecond) // the agent is waiting for a HELLO
			mu.Lock()
			key = newKey
			mu.Unlock()
			c, err := NewClient(hostConn, tc.hostKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			select {
			case err := <-res:
				if !errors.Is(err, tc.want) {
					t.Fatalf("agent: %v, want %v", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("agent neither accepted nor refused")
			}
		})
	}
}

// TestHandshakeRefusesNonHandshakeBytes: a peer that skips the handshake
// and speaks yamux (or anything) straight away is never served.
func TestHandshakeRefusesNonHandshakeBytes(t *testing.T) {
	peer, guestConn := net.Pipe()
	res := make(chan error, 1)
	go func() { _, err := AcceptHost(guestConn, keyOf(testKey)); res <- err }()
	go io.Copy(io.Discard, peer)
	req := bytes.NewBuffer(nil)
	_ = WriteFrame(req, FrameRequest, []byte(`{"version":2,"op":"exec","exec":{"argv":["id"]}}`))
	peer.Write(bytes.Repeat(req.Bytes(), 100))
	peer.Close()
	if err := <-res; err == nil {
		t.Fatal("agent accepted a peer that sent no handshake")
	}
}

// TestHandshakeOldAgent: an agent of protocol v1 answers READY; the host
// reports a version mismatch instead of waiting for ever.
func TestHandshakeOldAgent(t *testing.T) {
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	go func() {
		s := &markerScanner{r: guestConn}
		if _, err := s.next(markerHello); err == nil {
			guestConn.Write(markerReadyV1)
		}
		io.Copy(io.Discard, guestConn)
	}()
	err := helloWith(t, hostConn, testKey)
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Guest != 1 || !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("error = %v, want a v1 VersionError", err)
	}
}

// TestHandshakeImpostorAgent: a guest without the key cannot pass as the
// agent, even one that accepts every host.
func TestHandshakeImpostorAgent(t *testing.T) {
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	go func() {
		s := &markerScanner{r: guestConn}
		for {
			which, err := s.next(markerHello, markerAuth)
			if err != nil {
				return
			}
			if which == 0 {
				guestConn.Write(append(append([]byte{}, markerChallenge...), make([]byte, nonceSize)...))
				continue
			}
			guestConn.Write(append(append([]byte{}, markerAccept...), make([]byte, macSize)...))
		}
	}()
	c, err := NewClient(hostConn, testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := c.Hello(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hello to an impostor = %v, want no session (deadline exceeded)", err)
	}
}

// TestGuestOpenedStreamEndsSession: the agent may not open streams to the
// host; doing so ends its session.
func TestGuestOpenedStreamEndsSession(t *testing.T) {
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	go func() {
		r, err := AcceptHost(guestConn, keyOf(testKey))
		if err != nil {
			return
		}
		sess, err := yamux.Server(readConn{Conn: guestConn, r: r}, YamuxConfig(nil))
		if err != nil {
			return
		}
		if st, err := sess.OpenStream(); err == nil {
			st.Write(bytes.Repeat([]byte("x"), 64<<10))
		}
		<-sess.CloseChan()
	}()
	c, err := NewClient(hostConn, testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session kept after the guest opened a stream")
	}
}

func TestGuestStringsAreCapped(t *testing.T) {
	long := strings.Repeat("x", 1<<20-100)
	var buf bytes.Buffer
	_ = NewFrameWriter(&buf).WriteJSON(FrameError, RemoteError{Kind: KindInternal, Message: long})
	f, err := ReadFrame(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var re *RemoteError
	if !errors.As(DecodeError(f), &re) || len(re.Message) > MaxErrorMessage+20 || !strings.HasSuffix(re.Message, "[truncated]") {
		t.Fatalf("error message of %d bytes kept", len(re.Message))
	}

	c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
		_, _ = ReadFrame(st)
		_ = NewFrameWriter(st).WriteJSON(FrameResponse, Response{Hello: &Info{
			ProtocolVersion: ProtocolVersion, Hostname: long[:200000], AgentVersion: long[:5000], KernelRelease: long[:300],
		}})
	})
	info, err := c.Hello(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"hostname": info.Hostname, "agent": info.AgentVersion, "kernel": info.KernelRelease} {
		if len(v) > MaxInfoField+20 {
			t.Errorf("%s of %d bytes kept", name, len(v))
		}
	}
}
