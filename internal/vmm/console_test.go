package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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

// TestConsoleLogCapped: however much a guest prints, the log and its
// older half stay within the cap and hold the latest output.
func TestConsoleLogCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	const capBytes = 256 << 10
	l, err := OpenConsoleLog(path, capBytes)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("flood ", 15) + "\n")
	var total int64
	for i := 0; total < 20*capBytes; i++ {
		n, err := l.Write(line)
		if err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		total += int64(n)
		if got := fileSize(t, path) + fileSize(t, RotatedPath(path)); got > capBytes {
			t.Fatalf("after %d bytes the logs hold %d, over the cap %d", total, got, capBytes)
		}
	}
	l.Write([]byte("LAST LINE\n"))
	l.Close()
	cur, _ := os.ReadFile(path)
	if !bytes.HasSuffix(cur, []byte("LAST LINE\n")) {
		t.Errorf("latest output not at the end of %s", path)
	}
	if got := fileSize(t, path) + fileSize(t, RotatedPath(path)); got < capBytes/2 {
		t.Errorf("only %d bytes kept of the latest output, want at least half the cap", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("console log mode %v, want 0600", st.Mode().Perm())
	}
}

func TestConsoleLogHugeWriteAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := OpenConsoleLog(path, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	big = append(big, "END"...)
	if n, err := l.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	l.Close()
	if got := fileSize(t, path) + fileSize(t, RotatedPath(path)); got > 128<<10 {
		t.Fatalf("one huge write left %d bytes", got)
	}
	// A new daemon appends to what is there, still within the cap.
	l, err = OpenConsoleLog(path, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(bytes.Repeat([]byte("y"), 100<<10))
	l.Close()
	if got := fileSize(t, path) + fileSize(t, RotatedPath(path)); got > 128<<10 {
		t.Fatalf("after reopen the logs hold %d bytes", got)
	}
	if err := RemoveConsoleLog(path); err != nil || fileSize(t, path) != 0 || fileSize(t, RotatedPath(path)) != 0 {
		t.Fatalf("RemoveConsoleLog: %v", err)
	}
}

func TestConsoleLogRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, nil, 0o644)
	path := filepath.Join(dir, "console.log")
	os.Symlink(target, path)
	if _, err := OpenConsoleLog(path, 0); err == nil {
		t.Fatal("a console log that is a symlink was opened")
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
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		w.Write(line)
		if i%64 == 0 {
			time.Sleep(5 * time.Millisecond) // ~12 MB/s: far over the cap in 2 s
		}
	}
	w.Write([]byte("END\n"))
	time.Sleep(3 * consoleTrimInterval)
	close(done)
	<-stopped
	// The margin is what one interval of this writer adds.
	if got := fileSize(t, path) + fileSize(t, RotatedPath(path)); got > capBytes+4<<20 {
		t.Fatalf("trimmed logs hold %d bytes, cap %d", got, capBytes)
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
