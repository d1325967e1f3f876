package firecracker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hybridVsock is a stand-in for the host side of Firecracker's hybrid
// vsock: it reads "CONNECT <port>\n" and answers like Firecracker does.
type hybridVsock struct {
	l        net.Listener
	accepts  atomic.Int32
	answer   func(port string, attempt int32) string // "" closes the connection
	greeting string                                  // sent right after OK, before echoing
}

func startHybridVsock(t *testing.T, path string, h *hybridVsock) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	h.l = l
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := h.accepts.Add(1)
			go h.serve(c, n)
		}
	}()
}

func (h *hybridVsock) serve(c net.Conn, attempt int32) {
	defer c.Close()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	port, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
	if !ok {
		return
	}
	ans := h.answer(port, attempt)
	if ans == "" {
		return // Firecracker closes when nothing listens on the guest port
	}
	io.WriteString(c, ans+h.greeting)
	io.Copy(c, br)
}

// agentOnly answers OK for port 1024 only.
func agentOnly(port string, _ int32) string {
	if port == "1024" {
		return "OK 1073741824\n"
	}
	return ""
}

func TestDialVsock(t *testing.T) {
	tests := []struct {
		name     string
		h        *hybridVsock
		port     uint32
		timeout  time.Duration
		late     time.Duration // listener appears this late
		wantErr  string
		wantMore int32 // at least this many attempts
	}{
		{name: "handshake and data", h: &hybridVsock{answer: agentOnly, greeting: "hello\n"}, port: 1024, timeout: 5 * time.Second},
		{name: "refused port retried until ctx", h: &hybridVsock{answer: agentOnly}, port: 52, timeout: 300 * time.Millisecond,
			wantErr: "context deadline exceeded", wantMore: 2},
		{name: "garbage answer", h: &hybridVsock{answer: func(string, int32) string { return "HELLO THERE\n" }}, port: 1024, timeout: 3 * time.Second,
			wantErr: `unexpected CONNECT answer "HELLO THERE"`},
		{name: "guest agent comes up late", h: &hybridVsock{answer: func(p string, n int32) string {
			if n < 4 {
				return ""
			}
			return agentOnly(p, n)
		}, greeting: "hello\n"}, port: 1024, timeout: 5 * time.Second, wantMore: 4},
		{name: "socket appears late", h: &hybridVsock{answer: agentOnly, greeting: "hello\n"}, port: 1024, timeout: 5 * time.Second,
			late: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v.sock")
			if tt.late > 0 {
				time.AfterFunc(tt.late, func() { startHybridVsock(t, path, tt.h) })
			} else {
				startHybridVsock(t, path, tt.h)
			}
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			conn, err := DialVsock(ctx, path, tt.port)
			if got := tt.h.accepts.Load(); got < tt.wantMore {
				t.Errorf("%d connection attempts, want at least %d", got, tt.wantMore)
			}
			if tt.wantErr != "" {
				if err == nil {
					conn.Close()
					t.Fatal("DialVsock succeeded")
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q lacks %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DialVsock: %v", err)
			}
			defer conn.Close()
			// Bytes sent right after OK belong to the stream and must not be
			// lost in a read buffer.
			br := bufio.NewReader(conn)
			if line, err := br.ReadString('\n'); line != "hello\n" {
				t.Fatalf("first line = %q, %v", line, err)
			}
			fmt.Fprint(conn, "ping\n")
			if line, err := br.ReadString('\n'); line != "ping\n" {
				t.Fatalf("echo = %q, %v", line, err)
			}
		})
	}
}

func TestListenVsock(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	l, err := ListenVsock(uds, 1025)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != uds+"_1025" {
		t.Errorf("listening on %s, want %s_1025", got, uds)
	}
	c, err := net.Dial("unix", uds+"_1025")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
