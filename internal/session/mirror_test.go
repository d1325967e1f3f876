package session

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"banger/internal/diskspace"
	"banger/internal/prereq"
)

// The mirror keeps the newest output within the cap, in segments named
// by their offsets, and a reopened mirror resumes at the exact byte.
func TestMirrorCapAndResume(t *testing.T) {
	dir := t.TempDir()
	m, err := openMirror(dir, "stdout", minLogMax) // two segments of 32 KiB
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i := range 5000 {
		line := fmt.Sprintf("line %05d\n", i) // 11 bytes
		all.WriteString(line)
		if _, err := m.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	if m.end() != int64(all.Len()) {
		t.Fatalf("end %d, want %d", m.end(), all.Len())
	}
	offs, _ := segments(dir, "stdout")
	if len(offs) != 2 {
		t.Fatalf("segments %v, want the newest two", offs)
	}
	var got bytes.Buffer
	if err := copyMirror(&got, dir, "stdout", false, false, func() bool { return true }, nil); err != nil {
		t.Fatal(err)
	}
	if got.Len() > minLogMax || got.Len() < minLogMax/2 {
		t.Fatalf("kept %d bytes, want between half the cap and the cap", got.Len())
	}
	if !bytes.HasSuffix(all.Bytes(), got.Bytes()) {
		t.Fatalf("what is kept is not the newest output")
	}
	if mirrorSize(dir, "stdout") != int64(all.Len()) {
		t.Fatalf("mirrorSize %d, want %d", mirrorSize(dir, "stdout"), all.Len())
	}

	m, err = openMirror(dir, "stdout", minLogMax)
	if err != nil {
		t.Fatal(err)
	}
	if m.end() != int64(all.Len()) {
		t.Fatalf("reopened at %d, want %d", m.end(), all.Len())
	}
	m.Write([]byte("more\n"))
	m.Close()
	got.Reset()
	copyMirror(&got, dir, "stdout", false, false, func() bool { return true }, nil)
	if !strings.HasSuffix(got.String(), "line 04999\nmore\n") {
		t.Fatalf("after resume: ...%q", got.String()[max(0, got.Len()-30):])
	}
}

// A follower sees output written after it started, across a rotation,
// and stops once the session is over and all is sent; from the end it
// skips what was there.
func TestMirrorFollow(t *testing.T) {
	dir := t.TempDir()
	m, _ := openMirror(dir, "stderr", minLogMax)
	m.Write([]byte("before\n"))
	over := make(chan struct{})
	ended := func() bool { return isDone(over) }
	var got bytes.Buffer
	done := make(chan error)
	go func() { done <- copyMirror(&got, dir, "stderr", true, true, ended, nil) }()
	// Let the follower start at the end before writing more.
	time.Sleep(150 * time.Millisecond)
	big := bytes.Repeat([]byte("x"), 40<<10) // crosses into a new segment
	m.Write(big)
	m.Write([]byte("after\n"))
	close(over)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := string(big) + "after\n"; got.String() != want {
		t.Fatalf("followed %d bytes, want %d: what came after it started, across the rotation", got.Len(), len(want))
	}
}

// A full file system fails a write part way (or the next segment's
// creation) with ENOSPC and leaves the mirror where it got to: once there
// is room, writing the rest from end() gives the whole stream, no byte
// lost or doubled. The file system is a tmpfs small in bytes, then in
// inodes (a segment that cannot be created).
func TestMirrorFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "mounting a tmpfs needs root")
	}
	for _, tc := range []struct{ name, full, roomy string }{
		{"bytes", "size=64k", "size=4m"},
		{"inodes", "nr_inodes=2", "nr_inodes=64"}, // the root and one segment
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", tc.full, "banger-test", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount: %v: %s", err, out)
			}
			defer exec.Command("umount", dir).Run()
			m, err := openMirror(dir, "stdout", minLogMax*4) // segments of 128 KiB
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			all := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB: a rotation
			n, err := m.Write(all)
			if !diskspace.IsFull(err) {
				t.Fatalf("write of %d bytes onto a full tmpfs: n %d, err %v; want ENOSPC", len(all), n, err)
			}
			if m.end() != int64(n) || n == 0 || n == len(all) {
				t.Fatalf("after the failed write: end %d, wrote %d of %d", m.end(), n, len(all))
			}
			if out, err := exec.Command("mount", "-o", "remount,"+tc.roomy, dir).CombinedOutput(); err != nil {
				t.Fatalf("remount: %v: %s", err, out)
			}
			if _, err := m.Write(all[m.end():]); err != nil {
				t.Fatalf("the rest once there is room: %v", err)
			}
			var got bytes.Buffer
			copyMirror(&got, dir, "stdout", false, false, func() bool { return true }, nil)
			if !bytes.Equal(got.Bytes(), all) {
				t.Errorf("mirrored %d bytes, want the %d written (first difference near %d)", got.Len(), len(all), firstDiff(got.Bytes(), all))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
