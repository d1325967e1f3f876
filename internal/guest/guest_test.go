package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/yamux"
)

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		frame Frame
	}{
		{"empty eof", Frame{Type: FrameEOF, Payload: []byte{}}},
		{"stdout", Frame{Type: FrameStdout, Payload: []byte("hello\n")}},
		{"max size", Frame{Type: FrameData, Payload: bytes.Repeat([]byte{7}, MaxFrameSize)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tt.frame.Type, tt.frame.Payload); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != 5+len(tt.frame.Payload) {
				t.Errorf("encoded %d bytes, want %d", buf.Len(), 5+len(tt.frame.Payload))
			}
			got, err := ReadFrame(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.frame.Type || !bytes.Equal(got.Payload, tt.frame.Payload) {
				t.Errorf("got %v frame of %d bytes, want %v of %d", got.Type, len(got.Payload), tt.frame.Type, len(tt.frame.Payload))
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"clean end", nil, io.EOF},
		{"cut header", []byte{5, 0, 0}, io.ErrUnexpectedEOF},
		{"cut payload", []byte{5, 0, 0, 0, 4, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"too large", []byte{7, 0, 0x10, 0, 1}, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.input))
			if !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
	if err := WriteFrame(io.Discard, FrameData, make([]byte, MaxFrameSize+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("writing an oversized frame: %v", err)
	}
}

func TestContentReader(t *testing.T) {
	frames := func(fs ...Frame) io.Reader {
		var buf bytes.Buffer
		for _, f := range fs {
			if err := WriteFrame(&buf, f.Type, f.Payload); err != nil {
				t.Fatal(err)
			}
		}
		return &buf
	}
	tests := []struct {
		name    string
		in      io.Reader
		want    string
		wantErr string
	}{
		{"data then eof", frames(Frame{FrameData, []byte("ab")}, Frame{FrameData, []byte("cd")}, Frame{FrameEOF, nil}), "abcd", ""},
		{"cut before eof", frames(Frame{FrameData, []byte("ab")}), "ab", "unexpected EOF"},
		{"remote error", frames(Frame{FrameError, []byte(`{"kind":"invalid","message":"nope"}`)}), "", "guest: nope"},
		{"stray frame", frames(Frame{FrameStdout, []byte("x")}), "", "unexpected stdout frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := io.ReadAll(NewContentReader(tt.in))
			if string(got) != tt.want {
				t.Errorf("content = %q, want %q", got, tt.want)
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestChunksSplitsLargeWrites(t *testing.T) {
	var buf bytes.Buffer
	n, err := NewFrameWriter(&buf).Chunks(FrameData).Write(make([]byte, 2*ChunkSize+10))
	if err != nil || n != 2*ChunkSize+10 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	var sizes []int
	for {
		f, err := ReadFrame(&buf)
		if err != nil {
			break
		}
		sizes = append(sizes, len(f.Payload))
	}
	if diff := cmp.Diff([]int{ChunkSize, ChunkSize, 10}, sizes); diff != "" {
		t.Errorf("frame sizes (-want +got):\n%s", diff)
	}
}

func TestRemoteErrorKinds(t *testing.T) {
	re := ToRemoteError(fmt.Errorf("opening: %w", fs.ErrNotExist))
	if re.Kind != KindNotExist || !errors.Is(re, fs.ErrNotExist) {
		t.Errorf("not-exist error became %+v", re)
	}
	if re := ToRemoteError(errors.New("boom")); re.Kind != KindInternal || errors.Is(re, fs.ErrNotExist) {
		t.Errorf("plain error became %+v", re)
	}
	err := error(&VersionError{Guest: 2, Host: 1})
	want := "guest agent speaks protocol v2, bangerd speaks v1; rebuild the image with this banger (banger image pull --refresh ...) and recreate the vm"
	if err.Error() != want || !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("version error = %q", err)
	}
}

// fakeAgent handshakes like the agent, then serves a yamux session whose
// streams are handled by handle.
func fakeAgent(t *testing.T, handle func(guestConn net.Conn, st net.Conn)) *Client {
	t.Helper()
	hostConn, guestConn := net.Pipe()
	go func() {
		r, err := AcceptHost(guestConn, keyOf(testKey))
		if err != nil {
			return
		}
		sess, err := yamux.Server(readConn{Conn: guestConn, r: r}, YamuxConfig(nil))
		if err != nil {
			return
		}
		defer sess.Close()
		for {
			st, err := sess.Accept()
			if err != nil {
				return
			}
			go handle(guestConn, st)
		}
	}()
	c, err := NewClient(hostConn, testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		guestConn.Close()
	})
	return c
}

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

func TestCallsRespectContext(t *testing.T) {
	c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
		_, _ = io.Copy(io.Discard, st) // never answers
	})
	calls := map[string]func(ctx context.Context) error{
		"hello": func(ctx context.Context) error { _, err := c.Hello(ctx); return err },
		"exec": func(ctx context.Context) error {
			_, err := c.Exec(ctx, ExecRequest{Argv: []string{"true"}}, nil, nil, nil)
			return err
		},
		"get": func(ctx context.Context) error { _, err := c.Get(ctx, "/x", io.Discard); return err },
		"put": func(ctx context.Context) error {
			return c.Put(ctx, "/x", 0o644, 0, 0, strings.NewReader("data"))
		},
		"shutdown": c.Shutdown,
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- call(ctx) }()
			select {
			case err := <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error = %v, want deadline exceeded", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("call ignored its context")
			}
		})
	}
}

func TestCallsEndWhenConnectionDrops(t *testing.T) {
	c := fakeAgent(t, func(guestConn net.Conn, st net.Conn) {
		_, _ = ReadFrame(st) // the request...
		guestConn.Close()    // ...then the transport dies
	})
	done := make(chan error, 1)
	go func() { _, err := c.Hello(t.Context()); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnectionLost) {
			t.Errorf("error = %v, want ErrConnectionLost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Hello hung after the connection dropped")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Error("Done not closed after the connection dropped")
	}
}

// keyOf returns a key function for AcceptHost that always gives key.
func keyOf(key []byte) func() []byte { return func() []byte { return key } }
