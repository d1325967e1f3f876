package daemon

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// Subscribers hear changes in order; one that falls behind is dropped
// (its channel closed) rather than blocking the writer.
func TestEventBus(t *testing.T) {
	b := newEventBus()
	fast, doneFast := b.subscribe()
	defer doneFast()
	slow, doneSlow := b.subscribe()
	defer doneSlow()
	for i := 0; i < subBuffer+1; i++ {
		b.vmChanged(store.VMChange{Action: store.VMUpdated, ID: "id", Name: "web1", State: "running"})
		if i < subBuffer {
			if c := <-fast; c != (api.Change{Action: "updated", Name: "web1", ID: "id", State: "running"}) {
				t.Fatalf("change %d = %+v", i, c)
			}
		}
	}
	if c, ok := <-fast; !ok || c.Name != "web1" {
		t.Fatalf("fast subscriber: %+v %v, want the last change", c, ok)
	}
	n := 0
	for range slow {
		n++
	}
	if n != subBuffer {
		t.Fatalf("slow subscriber got %d changes before being dropped, want %d", n, subBuffer)
	}
}

// GET /v1/events opens with hello (the daemon's version info, web state
// included), then sends each committed VM change of the real store.
func TestEventsStream(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Server{log: slog.New(slog.DiscardHandler), events: newEventBus(), started: time.Now()}
	s.web.set(api.WebStatus{Addr: "127.0.0.1:7777", URL: "http://127.0.0.1:7777/"})
	st.OnVMChange(s.events.vmChanged)
	srv := httptest.NewServer(http.HandlerFunc(s.handleEvents))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != api.EventsContentType {
		t.Fatalf("Content-Type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	next := func() (string, string) {
		t.Helper()
		var name, data string
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("reading events: %v", err)
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && name != "":
				return name, data
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}
	name, data := next()
	var hello api.VersionInfo
	if name != "hello" || json.Unmarshal([]byte(data), &hello) != nil || hello.Web.URL != "http://127.0.0.1:7777/" {
		t.Fatalf("first event %s %s, want hello with the web state", name, data)
	}
	if err := st.CreateVM(t.Context(), store.VM{ID: "id1", Name: "web1", State: api.StateCreating}); err != nil {
		t.Fatal(err)
	}
	name, data = next()
	var c api.Change
	if name != "vm" || json.Unmarshal([]byte(data), &c) != nil || c != (api.Change{Action: "created", Name: "web1", ID: "id1", State: api.StateCreating}) {
		t.Fatalf("event %s %s, want web1 created", name, data)
	}
}
