package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/vmm/vmmtest"
)

// hostileAgent handshakes with the VM's key and answers hello like the
// agent (so the VM starts), then answers every other request with answer.
func hostileAgent(answer func(st net.Conn)) func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
	return func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
		key, err := agent.ReadKeyFile(filepath.Join(mc.Spec().Dir, agentKeyFile))
		if err != nil {
			return
		}
		r, err := guest.AcceptHost(conn, func() []byte { return key })
		if err != nil {
			return
		}
		sess, err := yamux.Server(rwConn{Conn: conn, r: r}, guest.YamuxConfig(nil))
		if err != nil {
			return
		}
		defer sess.Close()
		go func() { <-ctx.Done(); sess.Close() }()
		for {
			st, err := sess.Accept()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				f, err := guest.ReadFrame(st)
				if err != nil {
					return
				}
				var req guest.Request
				guest.DecodeJSON(f, guest.FrameRequest, &req)
				if req.Op == guest.OpHello {
					guest.NewFrameWriter(st).WriteJSON(guest.FrameResponse, guest.Response{Hello: &guest.Info{ProtocolVersion: guest.ProtocolVersion}})
					return
				}
				answer(st)
			}()
		}
	}
}

// rwConn reads from r (what the handshake read ahead, then the conn).
type rwConn struct {
	net.Conn
	r io.Reader
}

func (c rwConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// A VM whose agent answers with garbage, a frame too large or half a
// frame and a hang-up: the daemon's file calls against it fail at once
// with an error naming the VM, and never panic; a VM beside it keeps
// working meanwhile.
func TestMisbehavingGuest(t *testing.T) {
	answers := map[string]func(st net.Conn){
		"garbage": func(st net.Conn) {
			b := make([]byte, 8192)
			rand.Read(b)
			st.Write(b)
		},
		"oversized": func(st net.Conn) {
			st.Write([]byte{byte(guest.FrameResponse), 0xff, 0xff, 0xff, 0xff})
			io.Copy(io.Discard, st)
		},
		"half frame": func(st net.Conn) {
			st.Write([]byte{byte(guest.FrameResponse), 0, 0, 1, 0, '{'})
		},
	}
	var bad func(st net.Conn)
	rig := newLifeRig(t, vmmtest.MemOptions{Agent: func(ctx context.Context, mc *vmmtest.MemMachine, conn net.Conn) {
		if mc.Spec().Name == "good" {
			memAgent(false)(ctx, mc, conn)
			return
		}
		hostileAgent(func(st net.Conn) { bad(st) })(ctx, mc, conn)
	}})
	ctx := t.Context()
	for _, name := range []string{"good", "bad"} {
		if _, err := rig.start(ctx, t, rig.vm(t, name), 10*time.Second); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
	}
	s := &Server{vms: rig.m, log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	s.fileRoutes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	hc := &http.Client{Timeout: 10 * time.Second}
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("good data"), 0o644)

	for mode, answer := range answers {
		bad = answer
		for _, op := range []string{"get", "put"} {
			t.Run(mode+"/"+op, func(t *testing.T) {
				start := time.Now()
				var resp *http.Response
				var err error
				if op == "get" {
					resp, err = hc.Get(srv.URL + "/v1/vms/bad/files?path=/x")
				} else {
					req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/vms/bad/files?path=/tmp/x", strings.NewReader("data"))
					resp, err = hc.Do(req)
				}
				if err != nil {
					t.Fatalf("%s against the bad vm: %v after %s (the daemon hung up or hung)", op, err, time.Since(start))
				}
				defer resp.Body.Close()
				var body api.ErrorBody
				json.NewDecoder(resp.Body).Decode(&body)
				if resp.StatusCode == http.StatusOK || body.Error == nil {
					t.Fatalf("%s against the bad vm: status %d, no error", op, resp.StatusCode)
				}
				if !strings.Contains(body.Error.Message, `vm "bad"`) {
					t.Errorf("%s against the bad vm: error %q does not name the vm", op, body.Error.Message)
				}
				t.Logf("%s (%s): %s in %s", op, mode, body.Error.Message, time.Since(start).Round(time.Millisecond))

				// The good VM beside it works.
				g, err := hc.Get(srv.URL + "/v1/vms/good/files?path=" + src)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(g.Body)
				g.Body.Close()
				if g.StatusCode != http.StatusOK || string(b) != "good data" {
					t.Errorf("the good vm: status %d, %q", g.StatusCode, b)
				}
			})
		}
	}
}
