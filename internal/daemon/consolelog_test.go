package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/vmm"
)

// TestConsoleFollowerAcrossTrims: vm logs --follow keeps sending, without
// loss or repeats, while the driver trims the log under a guest that
// prints fast.
func TestConsoleFollowerAcrossTrims(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("boot\n"))
	done := make(chan struct{})
	go vmm.TrimConsoleFile(path, 128<<10, done)
	defer close(done)

	f, _ := os.Open(path)
	var out bytes.Buffer
	c := &consoleFollower{w: &out, path: path, f: f}
	defer c.close()
	var want bytes.Buffer
	want.WriteString("boot\n")
	writer := make(chan struct{})
	go func() {
		defer close(writer)
		for i := range 2000 {
			line := bytes.Repeat([]byte{byte('a' + i%26)}, 511)
			line = append(line, '\n')
			w.Write(line)
			want.Write(line)
			if i%20 == 0 {
				time.Sleep(10 * time.Millisecond) // ~1 MB/s, a trim every ~64 KiB
			}
		}
	}()
	for finished := false; !finished; {
		select {
		case <-writer:
			finished = true
		case <-time.After(5 * time.Millisecond):
			// Well inside the ~64 ms between trims even on a loaded
			// machine: two trims between polls lose output by design
			// (only one older half is kept).
		}
		c.copyAvailable()
		c.catchUp()
		c.copyAvailable()
	}
	if size := func() int64 { st, _ := os.Stat(vmm.RotatedPath(path)); return st.Size() }(); size == 0 {
		t.Fatal("the log was never trimmed")
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("followed %d bytes, the guest wrote %d (lost or repeated output)", out.Len(), want.Len())
	}
}
