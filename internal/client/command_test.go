package client

import (
	"strings"
	"testing"
)

// In a raw terminal the first Ctrl-C byte reaches the guest and the
// second detaches, held back from it.
func TestCtrlCReader(t *testing.T) {
	detached := 0
	r := &ctrlCReader{r: strings.NewReader("ab\x03cd\x03ef"), detach: func() { detached++ }}
	b := make([]byte, 64)
	n, _ := r.Read(b)
	if got := string(b[:n]); got != "ab\x03cd" || detached != 1 {
		t.Fatalf("read %q, detached %d times; want %q and 1", got, detached, "ab\x03cd")
	}
}
