package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func TestRemoveConsoleLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(path, []byte("a"), 0o600)
	os.WriteFile(RotatedPath(path), []byte("b"), 0o600)
	if err := RemoveConsoleLog(path); err != nil || fileSize(t, path) != 0 || fileSize(t, RotatedPath(path)) != 0 {
		t.Fatalf("RemoveConsoleLog: %v", err)
	}
	if err := RemoveConsoleLog(path); err != nil {
		t.Fatalf("removing what is gone: %v", err)
	}
}

// TestTrimConsoleFileRefusesSymlink: a console.log that is a symlink is
// never followed.
func TestTrimConsoleFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, bytes.Repeat([]byte("x"), 1<<20), 0o644)
	path := filepath.Join(dir, "console.log")
	os.Symlink(target, path)
	if err := trimOnce(path, 1024); err == nil || fileSize(t, target) != 1<<20 {
		t.Fatalf("trim through a symlink: %v, target now %d bytes", err, fileSize(t, target))
	}
}

// TestTrimConsoleFile: a file another process appends to (Firecracker's
// stdout) is cut back to the latest output, its older half in path.1.
func TestTrimConsoleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const capBytes = 128 << 10
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() { TrimConsoleFile(path, capBytes, done); close(stopped) }()
	line := bytes.Repeat([]byte("z"), 1023)
	line = append(line, '\n')
	start := time.Now()
	var written, peak int64
	for i := 0; time.Since(start) < 2*time.Second; i++ {
		w.Write(line)
		written += int64(len(line))
		if i%64 == 0 {
			time.Sleep(5 * time.Millisecond) // ~12 MB/s: far over the cap in 2 s
			peak = max(peak, fileSize(t, path)+fileSize(t, RotatedPath(path)))
		}
	}
	w.Write([]byte("END\n"))
	time.Sleep(3 * consoleTrimInterval)
	close(done)
	<-stopped
	// The files may pass the cap by what the writer adds in two intervals.
	rate := float64(written) / time.Since(start).Seconds()
	margin := int64(rate * 2 * consoleTrimInterval.Seconds() * 1.5)
	t.Logf("wrote %d MB at %.1f MB/s; peak %d bytes, cap %d, margin %d", written>>20, rate/1e6, peak, capBytes, margin)
	if peak > capBytes+margin {
		t.Fatalf("console files peaked at %d bytes, cap %d + margin %d", peak, capBytes, margin)
	}
	if fileSize(t, RotatedPath(path)) == 0 {
		t.Fatal("no older half kept")
	}
	b, _ := os.ReadFile(path)
	if !bytes.HasSuffix(b, []byte("END\n")) && !bytes.HasSuffix(mustRead(t, RotatedPath(path)), []byte("END\n")) {
		t.Fatal("latest output lost")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, _ := os.ReadFile(p)
	return b
}
