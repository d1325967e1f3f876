package guest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestOpenStreamRespectsContext: a guest that completes the handshake and
// then never reads (so never acks a stream) does not stall the host.
func TestOpenStreamRespectsContext(t *testing.T) {
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	accepted := make(chan struct{})
	go func() {
		if _, err := AcceptHost(guestConn, keyOf(testKey)); err == nil {
			close(accepted)
		}
		// Never read again: yamux writes to the pipe block.
	}()
	c, err := NewClient(hostConn, testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	for _, name := range []string{"open", "hello"} {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		start := time.Now()
		var err error
		if name == "open" {
			_, err = c.OpenStream(ctx)
		} else {
			_, err = c.Hello(ctx)
		}
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: error = %v, want deadline exceeded", name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %v with a 300ms context", name, d)
		}
	}
}
