package daemon

import (
	"strings"
	"testing"
)

func TestCappedBuffer(t *testing.T) {
	c := &cappedBuffer{max: 10}
	for range 1000 {
		if n, err := c.Write([]byte("0123456789abcdef")); n != 16 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if len(c.b) != 10 {
		t.Fatalf("kept %d bytes, want 10", len(c.b))
	}
	if got := c.String(); !strings.HasPrefix(got, "0123456789") || !strings.Contains(got, "15990 more bytes not kept") {
		t.Fatalf("String = %q", got)
	}
	small := &cappedBuffer{max: maxGuestStderr}
	small.Write([]byte("tar: x: Cannot open"))
	if small.String() != "tar: x: Cannot open" {
		t.Fatalf("short stderr changed: %q", small.String())
	}
}
