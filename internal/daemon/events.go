package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// eventBus fans VM changes out to GET /v1/events subscribers. A
// subscriber too slow to keep up is dropped (its channel closed): its
// client reconnects and refetches, which is cheaper than an unbounded
// queue.
type eventBus struct {
	mu   sync.Mutex // guards subs
	subs map[chan api.Change]struct{}
}

// subBuffer is how many changes a subscriber may fall behind by.
const subBuffer = 256

func newEventBus() *eventBus { return &eventBus{subs: make(map[chan api.Change]struct{})} }

// vmChanged is the store's OnVMChange hook. It must not block.
func (b *eventBus) vmChanged(c store.VMChange) {
	b.publish(api.Change{Action: c.Action, Name: c.Name, ID: c.ID, State: c.State})
}

func (b *eventBus) publish(c api.Change) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- c:
		default:
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// subscribe returns a channel of changes from now on, and the function
// that ends the subscription. The channel is closed when the subscriber
// fell behind.
func (b *eventBus) subscribe() (<-chan api.Change, func()) {
	ch := make(chan api.Change, subBuffer)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// pingEvery keeps idle event streams alive through proxies and lets a
// client see a dead daemon within a few seconds.
const pingEvery = 10 * time.Second

// handleEvents streams VM changes as server-sent events until the client
// leaves or the daemon stops. It opens with a "hello" event (the
// daemon's VersionInfo), so a client that reconnects knows to refetch.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, api.Errorf(api.Internal, "this connection cannot stream events"))
		return
	}
	ch, done := s.events.subscribe()
	defer done()
	w.Header().Set("Content-Type", api.EventsContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 1000\n\n") // a browser reconnects after 1 s, not its default 3
	writeEvent(w, "hello", s.versionInfo())
	fl.Flush()
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			fmt.Fprint(w, ": ping\n\n")
		case c, ok := <-ch:
			if !ok {
				return // fell behind: the client reconnects and refetches
			}
			writeEvent(w, "vm", c)
		}
		fl.Flush()
	}
}

func writeEvent(w http.ResponseWriter, name string, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
}
