package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
)

// fakeQMP serves the QMP handshake and answers commands on conn the way
// QEMU does, with an async event before every reply. "fail" gets an error
// "hangup" closes the connection, and "mute" is never answered.
func fakeQMP(t *testing.T, conn net.Conn) {
	t.Helper()
	go func() {
		defer conn.Close()
		fmt.Fprintln(conn, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}`)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				return
			}
			fmt.Fprintln(conn, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`)
			switch req.Execute {
			case "hangup":
				return
			case "mute":
				continue // a QEMU stopped between two commands
			case "fail":
				fmt.Fprintf(conn, `{"error": {"class": "GenericError", "desc": "nope"}, "id": %s}`+"\n", req.ID)
			case "query-status":
				fmt.Fprintf(conn, `{"return": {"running": true, "status": "running"}, "id": %s}`+"\n", req.ID)
			default:
				fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
			}
		}
	}()
}

func TestQMPClient(t *testing.T) {
	host, guest := net.Pipe()
	fakeQMP(t, guest)
	c, err := newQMPClient(t.Context(), host)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.close()

	ret, err := c.execute(t.Context(), "query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var st struct{ Status string }
	json.Unmarshal(ret, &st)
	if diff := cmp.Diff("running", st.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	_, err = c.execute(t.Context(), "fail", nil)
	var qerr *qmpError
	if !errors.As(err, &qerr) || qerr.Desc != "nope" {
		t.Errorf("fail: %v, want the qmp error", err)
	}

	if _, err := c.execute(t.Context(), "hangup", nil); !errors.Is(err, errQMPClosed) {
		t.Errorf("hangup: %v, want errQMPClosed", err)
	}
	if !c.broken() {
		t.Error("client not marked broken after hangup")
	}
	if _, err := c.execute(t.Context(), "stop", nil); !errors.Is(err, errQMPClosed) {
		t.Errorf("after hangup: %v, want errQMPClosed", err)
	}
}

func TestQMPBadGreeting(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		fmt.Fprintln(guest, `{"hello": 1}`)
		guest.Close()
	}()
	_, err := newQMPClient(t.Context(), host)
	if err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Errorf("err = %v, want a greeting error", err)
	}
}

func TestQMPSilentServerHonoursContext(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := newQMPClient(ctx, host)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

// A command QEMU never answers (a stopped process), and a monitor that
// never greets, fail after qmpReplyTimeout with vmm.ErrUnresponsive even
// when the caller's context has no deadline; the connection stays usable.
func TestQMPNoReplyIsBounded(t *testing.T) {
	defer func(d time.Duration) { qmpReplyTimeout = d }(qmpReplyTimeout)
	qmpReplyTimeout = 200 * time.Millisecond

	host, guest := net.Pipe()
	fakeQMP(t, guest)
	c, err := newQMPClient(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	start := time.Now()
	_, err = c.execute(context.Background(), "mute", nil)
	if !errors.Is(err, vmm.ErrUnresponsive) || !strings.Contains(err.Error(), "qmp mute: no reply in 200ms") {
		t.Errorf("mute: %v, want vmm.ErrUnresponsive naming the command", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("mute took %s", d)
	}
	if _, err := c.execute(context.Background(), "stop", nil); err != nil {
		t.Errorf("a command after the unanswered one: %v", err)
	}

	silent, other := net.Pipe()
	defer other.Close()
	_, err = newQMPClient(context.Background(), silent)
	if !errors.Is(err, vmm.ErrUnresponsive) || !strings.Contains(err.Error(), "greeting") {
		t.Errorf("silent monitor: %v, want vmm.ErrUnresponsive on the greeting", err)
	}
}
