package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/vmm"
)

// TestConsoleFollowerAcrossRotation: vm logs --follow keeps sending when
// the driver rotates the log, without losing the old file's tail.
func TestConsoleFollowerAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := vmm.OpenConsoleLog(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write([]byte("first\n"))
	f, _ := os.Open(path)
	var out bytes.Buffer
	c := &consoleFollower{w: &out, path: path, f: f}
	defer c.close()
	c.copyAvailable()
	// Enough to rotate (half the cap is 32 KiB), ending in a marker.
	l.Write(bytes.Repeat([]byte("x"), 20<<10))
	l.Write(bytes.Repeat([]byte("y"), 20<<10))
	l.Write([]byte("after rotation\n"))
	c.copyAvailable()
	c.reopenIfRotated()
	c.copyAvailable()
	got := out.String()
	if !bytes.HasPrefix(out.Bytes(), []byte("first\n")) || !bytes.HasSuffix(out.Bytes(), []byte("after rotation\n")) {
		t.Fatalf("followed %d bytes: %q...%q", len(got), got[:min(20, len(got))], got[max(0, len(got)-20):])
	}
	if want := 6 + 40<<10 + 15; len(got) != want {
		t.Fatalf("followed %d bytes, want %d (nothing lost or repeated)", len(got), want)
	}
}
