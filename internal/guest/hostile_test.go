package guest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A guest agent may be hostile or broken: it may send garbage, frames
// larger than allowed, half a frame and then nothing, or output without
// end. The host side must never panic, hold memory in proportion to what
// the guest claims rather than what it sends, or wait past the caller's
// context. These tests run the client against such agents in process.

// callTimeout is the context each call against a misbehaving agent gets;
// callBound is how long it may take to return all the same.
const (
	callTimeout = 300 * time.Millisecond
	callBound   = 5 * time.Second
)

// rawAgent handshakes like the agent, then hands the transport to after
// instead of serving yamux on it.
func rawAgent(t *testing.T, after func(conn net.Conn)) *Client {
	t.Helper()
	hostConn, guestConn := net.Pipe()
	go func() {
		if _, err := AcceptHost(guestConn, keyOf(testKey)); err != nil {
			return
		}
		after(guestConn)
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

// hostileCalls are the client's calls, each as a func of its context.
func hostileCalls(c *Client) map[string]func(ctx context.Context) error {
	return map[string]func(ctx context.Context) error{
		"hello": func(ctx context.Context) error { _, err := c.Hello(ctx); return err },
		"exec": func(ctx context.Context) error {
			_, err := c.Exec(ctx, ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
			return err
		},
		"get": func(ctx context.Context) error { _, err := c.Get(ctx, "/x", io.Discard); return err },
		"put": func(ctx context.Context) error {
			return c.Put(ctx, "/x", 0o644, 0, 0, strings.NewReader("data"))
		},
		"session start": func(ctx context.Context) error {
			_, err := c.SessionStart(ctx, SessionStartRequest{Name: "s", Argv: []string{"true"}})
			return err
		},
		"session list": func(ctx context.Context) error { _, err := c.SessionList(ctx); return err },
		"session attach": func(ctx context.Context) error {
			st, _, err := c.SessionAttach(ctx, SessionAttachRequest{Name: "s", Follow: true})
			if err != nil {
				return err
			}
			defer st.Close()
			for {
				if _, err := st.Recv(); err != nil {
					return err
				}
			}
		},
		"shutdown": c.Shutdown,
	}
}

// mustEnd runs call with a callTimeout context and fails unless it
// returns an error (not a panic) within callBound.
func mustEnd(t *testing.T, name string, call func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("panic: %v", p)
			}
		}()
		done <- call(ctx)
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("%s: succeeded against a misbehaving agent", name)
		} else if strings.HasPrefix(err.Error(), "panic: ") {
			t.Errorf("%s: %v", name, err)
		}
		return err
	case <-time.After(callBound):
		t.Fatalf("%s: still running %s after its %s context ended", name, callBound, callTimeout)
		return nil
	}
}

// peakHeap runs f and returns how far the heap grew above where it was
// before, sampled every millisecond while f runs.
func peakHeap(f func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
				peak.Store(ms.HeapAlloc - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// An agent that handshakes and then sends garbage, or half a yamux
// header and then nothing, instead of a session: every call ends, with an
// error, by its context or as a lost connection.
func TestHostileTransport(t *testing.T) {
	for name, after := range map[string]func(conn net.Conn){
		"garbage": func(conn net.Conn) {
			b := make([]byte, 4096)
			for {
				rand.Read(b)
				b[0] = 0 // a yamux version byte, so the garbage reaches the header parser
				if _, err := conn.Write(b); err != nil {
					return
				}
			}
		},
		"half header then silence": func(conn net.Conn) {
			conn.Write([]byte{0, 0, 0})
			io.Copy(io.Discard, conn)
		},
		"silence": func(conn net.Conn) { io.Copy(io.Discard, conn) },
	} {
		t.Run(name, func(t *testing.T) {
			c := rawAgent(t, after)
			for call, f := range hostileCalls(c) {
				mustEnd(t, call, f)
			}
		})
	}
}

// frameHeader is a frame header of type ft announcing n payload bytes.
func frameHeader(ft FrameType, n uint32) []byte {
	h := make([]byte, frameHeaderSize)
	h[0] = byte(ft)
	binary.BigEndian.PutUint32(h[1:], n)
	return h
}

// An agent that answers every request with something that is not a
// well-formed answer: each call fails with an error, within its context,
// whatever the operation.
func TestHostileFrames(t *testing.T) {
	for name, answer := range map[string]func(st net.Conn){
		"random bytes": func(st net.Conn) {
			b := make([]byte, 64<<10)
			rand.Read(b)
			st.Write(b)
			io.Copy(io.Discard, st)
		},
		"oversized frame": func(st net.Conn) {
			st.Write(frameHeader(FrameResponse, 1<<31))
			io.Copy(io.Discard, st)
		},
		"half a frame then silence": func(st net.Conn) {
			st.Write(frameHeader(FrameResponse, 1000))
			st.Write([]byte(`{"pid":`))
			io.Copy(io.Discard, st)
		},
		"half a header then silence": func(st net.Conn) {
			st.Write([]byte{byte(FrameResponse), 0})
			io.Copy(io.Discard, st)
		},
		"unknown frame type": func(st net.Conn) {
			NewFrameWriter(st).WriteFrame(FrameType(200), []byte("{}"))
			io.Copy(io.Discard, st)
		},
		"response that is not json": func(st net.Conn) {
			NewFrameWriter(st).WriteFrame(FrameResponse, []byte("\x00\xffnot json"))
			io.Copy(io.Discard, st)
		},
		"response of the wrong shape": func(st net.Conn) {
			NewFrameWriter(st).WriteFrame(FrameResponse, []byte(`{"hello":7,"session":"x","sessions":{},"pid":"one"}`))
			io.Copy(io.Discard, st)
		},
		"empty response": func(st net.Conn) {
			NewFrameWriter(st).WriteFrame(FrameResponse, []byte(`{}`))
			io.Copy(io.Discard, st)
		},
		"error that is not json": func(st net.Conn) {
			NewFrameWriter(st).WriteFrame(FrameError, []byte("}{"))
			io.Copy(io.Discard, st)
		},
		"close at once": func(st net.Conn) { st.Close() },
	} {
		t.Run(name, func(t *testing.T) {
			c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
				if _, err := ReadFrame(st); err != nil {
					return
				}
				answer(st)
			})
			for call, f := range hostileCalls(c) {
				// "empty response" is a fine answer to some calls (a
				// shutdown, a session list with none, a put the guest
				// says it took); the others must fail.
				if name == "empty response" && (call == "shutdown" || call == "session list" || call == "put") {
					continue
				}
				mustEnd(t, call, f)
			}
		})
	}
}

// An agent that floods output without end (exec's stdout, a file's
// content, a session's output): each call ends by its context, and the
// host's heap does not grow with what was sent.
func TestHostileFlood(t *testing.T) {
	chunk := make([]byte, ChunkSize)
	rand.Read(chunk)
	var sent atomic.Int64
	c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
		f, err := ReadFrame(st)
		if err != nil {
			return
		}
		var req Request
		DecodeJSON(f, FrameRequest, &req)
		fw := NewFrameWriter(st)
		out := FrameStdout
		switch req.Op {
		case OpExec:
			fw.WriteJSON(FrameResponse, Response{PID: 1})
		case OpSessionAttach:
			fw.WriteJSON(FrameResponse, Response{Session: &SessionInfo{Name: "s", State: SessionRunning}})
		case OpGet:
			fw.WriteJSON(FrameResponse, Response{File: &FileInfo{Size: 1 << 40}})
			out = FrameData
		default:
			fw.WriteJSON(FrameResponse, Response{})
			return
		}
		go io.Copy(io.Discard, st)
		for {
			if err := fw.WriteFrame(out, chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
	})
	calls := hostileCalls(c)
	for _, name := range []string{"exec", "get", "session attach"} {
		sent.Store(0)
		grew := peakHeap(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			start := time.Now()
			err := calls[name](ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: error %v, want deadline exceeded", name, err)
			}
			if d := time.Since(start); d > callBound {
				t.Errorf("%s: took %s with a 1s context", name, d)
			}
		})
		// The peak is garbage the collector has not yet taken (each frame
		// is a fresh 32 KiB): bounded by its pacing, not by what was sent.
		// Under a loaded machine the collector lags and the peak passes
		// 64 MiB (66 and 70 MiB seen with 680 and 878 MiB sent), so it
		// fails only above a quarter of what was sent too: what a leak
		// that kept the frames would show.
		n := sent.Load()
		t.Logf("%s flood: %d MiB sent in 1s, heap grew at most %d KiB", name, n>>20, grew>>10)
		if grew > 64<<20 && grew > uint64(n)/4 {
			t.Errorf("%s flood: heap grew %d MiB with %d MiB sent", name, grew>>20, n>>20)
		}
	}
}

// Many calls at once, each answered by a header announcing the largest
// frame and then silence: the host holds what was sent, not what was
// announced.
func TestHostileAnnouncedFrames(t *testing.T) {
	const calls = 64
	c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
		if _, err := ReadFrame(st); err != nil {
			return
		}
		st.Write(frameHeader(FrameResponse, MaxFrameSize))
		st.Write([]byte("{"))
		io.Copy(io.Discard, st)
	})
	grew := peakHeap(func() {
		var wg sync.WaitGroup
		for range calls {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				if _, err := c.Hello(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("hello: %v, want deadline exceeded", err)
				}
			})
		}
		wg.Wait()
	})
	t.Logf("%d calls each announced a %d MiB frame and sent 1 byte: heap grew at most %d KiB", calls, MaxFrameSize>>20, grew>>10)
	if grew > 16<<20 {
		t.Errorf("heap grew %d MiB for %d announced frames of 1 MiB (1 byte each sent)", grew>>20, calls)
	}
}

// With no deadline of the caller's, an agent that leaves a request
// unanswered, or a frame unfinished, is met by the client's own bounds
// (AnswerTimeout, FrameTimeout): every call that expects a prompt answer
// ends with ErrNoAnswer; an exec whose output stops half way through a
// frame ends too, while one that is merely quiet does not.
func TestHostileSilenceBounds(t *testing.T) {
	oldF, oldA, oldU := FrameTimeout, AnswerTimeout, UploadAnswerTimeout
	FrameTimeout, AnswerTimeout, UploadAnswerTimeout = 200*time.Millisecond, 300*time.Millisecond, 400*time.Millisecond
	t.Cleanup(func() { FrameTimeout, AnswerTimeout, UploadAnswerTimeout = oldF, oldA, oldU })
	prompt := []string{"hello", "exec", "get", "put", "session start", "session list", "session attach", "shutdown"}
	for name, answer := range map[string]func(st net.Conn){
		"silence": func(st net.Conn) { io.Copy(io.Discard, st) },
		"half a frame then silence": func(st net.Conn) {
			st.Write(frameHeader(FrameResponse, 1000))
			st.Write([]byte(`{"pid":`))
			io.Copy(io.Discard, st)
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
				if _, err := ReadFrame(st); err != nil {
					return
				}
				answer(st)
			})
			calls := hostileCalls(c)
			for _, call := range prompt {
				start := time.Now()
				done := make(chan error, 1)
				go func() { done <- calls[call](context.Background()) }()
				select {
				case err := <-done:
					if !errors.Is(err, ErrNoAnswer) {
						t.Errorf("%s: error %v, want ErrNoAnswer", call, err)
					}
				case <-time.After(callBound):
					t.Fatalf("%s: still waiting after %s with no answer", call, time.Since(start))
				}
			}
		})
	}

	// An exec that started, wrote half a frame of output and went quiet.
	quiet := make(chan struct{})
	c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
		if _, err := ReadFrame(st); err != nil {
			return
		}
		fw := NewFrameWriter(st)
		fw.WriteJSON(FrameResponse, Response{PID: 1})
		<-quiet
		st.Write(frameHeader(FrameStdout, 100))
		st.Write([]byte("half"))
		io.Copy(io.Discard, st)
	})
	es, err := c.OpenExec(context.Background(), ExecRequest{Argv: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	got := make(chan error, 1)
	go func() { _, err := es.Recv(); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("a quiet command's stream ended: %v", err)
	case <-time.After(3 * AnswerTimeout):
	}
	close(quiet)
	select {
	case err := <-got:
		if !errors.Is(err, ErrNoAnswer) {
			t.Errorf("half a frame of output: error %v, want ErrNoAnswer", err)
		}
	case <-time.After(callBound):
		t.Fatal("half a frame of output: the stream still waits")
	}
}
