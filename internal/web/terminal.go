package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"

	"banger/internal/api"
)

// End is the text message the terminal WebSocket sends when the attach
// ends: the session's state then (exited with its code, lost, or still
// running when the attach alone ended).
type End struct {
	Type     string `json:"type"` // "end"
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Error    string `json:"error,omitempty"`
}

// terminal bridges a WebSocket to a running session through the session's
// own Unix socket, the one `banger vm session attach` opens: binary
// messages are its input, its output comes back as binary messages.
// Resizing goes through the API (POST .../resize), as the CLI does.
func (h *Handler) terminal(w http.ResponseWriter, r *http.Request) {
	vm, name := r.PathValue("name"), r.PathValue("session")
	// check has already compared Origin with Host; the library's own
	// check would do the same.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	var s api.Session
	if err := h.call(ctx, http.MethodGet, sessionPath(vm, name), nil, &s); err != nil {
		h.sendEnd(ctx, c, End{Type: "end", Error: err.Error()})
		return
	}
	if s.State != api.SessionRunning || s.Socket == "" {
		h.sendEnd(ctx, c, h.end(ctx, vm, name))
		return
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.Socket)
	if err != nil {
		h.sendEnd(ctx, c, End{Type: "end", State: s.State, Error: fmt.Sprintf("connecting to session %s: %v", name, err)})
		return
	}
	defer conn.Close()
	done := make(chan struct{}) // the session's side ended
	left := make(chan struct{}) // the page's side ended
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if werr := c.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				close(left)
				conn.Close() // the page left: detach, the session goes on
				return
			}
			if typ == websocket.MessageBinary && len(b) > 0 {
				if _, err := conn.Write(b); err != nil {
					return
				}
			}
		}
	}()
	<-done
	select {
	case <-left:
		return // no one to tell
	default:
	}
	h.sendEnd(ctx, c, h.end(ctx, vm, name))
}

// end says how the session is after an attach ended. The socket closes
// a moment before the daemon records the exit, so wait briefly for it.
func (h *Handler) end(ctx context.Context, vm, name string) End {
	var s api.Session
	for i := 0; i < 20; i++ {
		if err := h.call(ctx, http.MethodGet, sessionPath(vm, name), nil, &s); err != nil {
			return End{Type: "end", Error: err.Error()}
		}
		if s.State != api.SessionRunning {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return End{Type: "end", State: s.State, ExitCode: s.ExitCode, Reason: s.Reason}
}

func (h *Handler) sendEnd(ctx context.Context, c *websocket.Conn, e End) {
	b, _ := json.Marshal(e)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := c.Write(wctx, websocket.MessageText, b); err != nil {
		return
	}
	c.Close(websocket.StatusNormalClosure, "session attach ended")
}

func sessionPath(vm, name string) string {
	return "/v1/vms/" + url.PathEscape(vm) + "/sessions/" + url.PathEscape(name)
}
