package session

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A mirror keeps the host's copy of one output stream of a session, in
// segment files named <stream>.<offset>: offset is the position in the
// guest's copy of the stream of the segment's first byte. Only the
// newest two segments are kept, each at most half the cap, so the mirror
// holds the latest output and at most the cap. The file names carry the
// offsets, so a daemon killed at any moment resumes at the exact byte the
// files end with: no index to get out of step.
type mirror struct {
	dir, stream string
	half        int64 // a segment is closed once it holds this much

	f     *os.File // the newest segment, open for appending
	start int64    // its offset
	size  int64    // its length
}

// minLogMax is the smallest cap: two segments of 32 KiB.
const minLogMax = 64 << 10

func segmentName(stream string, off int64) string {
	return fmt.Sprintf("%s.%016d", stream, off)
}

// segments returns the offsets of stream's segments in dir, oldest first.
func segments(dir, stream string) ([]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var offs []int64
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), stream+".")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if off, err := strconv.ParseInt(rest, 10, 64); err == nil && len(rest) == 16 {
			offs = append(offs, off)
		}
	}
	slices.Sort(offs)
	return offs, nil
}

// openMirror opens stream's mirror in dir (made if missing) to append
// where it ends; capBytes caps the mirror.
func openMirror(dir, stream string, capBytes int64) (*mirror, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &mirror{dir: dir, stream: stream, half: max(capBytes, minLogMax) / 2}
	offs, err := segments(dir, stream)
	if err != nil {
		return nil, err
	}
	if len(offs) > 0 {
		m.start = offs[len(offs)-1]
	}
	if err := m.open(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *mirror) open() error {
	f, err := os.OpenFile(filepath.Join(m.dir, segmentName(m.stream, m.start)),
		os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	m.f, m.size = f, st.Size()
	return nil
}

// end is the guest offset the mirror has reached: where to resume.
func (m *mirror) end() int64 { return m.start + m.size }

// Write appends p, starting a new segment (and dropping the oldest) once
// the current one is full.
func (m *mirror) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if m.size >= m.half {
			if err := m.rotate(); err != nil {
				return written, err
			}
		}
		chunk := p[:min(int64(len(p)), m.half-m.size)]
		n, err := m.f.Write(chunk)
		m.size += int64(n)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// rotate opens the next segment before it lets go of the current one:
// when that fails (a full disk), the mirror stays as it was, to be
// written again.
func (m *mirror) rotate() error {
	old, start, size := m.f, m.start, m.size
	m.start, m.size = m.end(), 0
	if err := m.open(); err != nil {
		m.f, m.start, m.size = old, start, size
		return err
	}
	old.Close()
	offs, err := segments(m.dir, m.stream)
	if err != nil {
		return err
	}
	for _, off := range offs[:max(0, len(offs)-2)] {
		os.Remove(filepath.Join(m.dir, segmentName(m.stream, off)))
	}
	return nil
}

func (m *mirror) Close() error { return m.f.Close() }

// mirrorSize is how many bytes of stream have been mirrored to dir.
func mirrorSize(dir, stream string) int64 {
	offs, err := segments(dir, stream)
	if err != nil || len(offs) == 0 {
		return 0
	}
	last := offs[len(offs)-1]
	st, err := os.Stat(filepath.Join(dir, segmentName(stream, last)))
	if err != nil {
		return last
	}
	return last + st.Size()
}

// copyMirror writes what the mirror of stream in dir holds to w, from
// its oldest kept byte (fromEnd: only what comes next). With follow it
// then waits for more (polling) until ended reports the session over and
// everything is sent, or stop is closed.
func copyMirror(w io.Writer, dir, stream string, fromEnd, follow bool, ended func() bool, stop <-chan struct{}) error {
	pos := int64(-1) // guest offset of the next byte to send; -1: the oldest kept
	if fromEnd {
		pos = mirrorSize(dir, stream)
	}
	for {
		over := ended() // checked before reading, so nothing written before it is missed
		n, err := copyFrom(w, dir, stream, &pos)
		if err != nil {
			return err
		}
		if !follow || (over && n == 0) {
			return nil
		}
		if n > 0 {
			if fl, ok := w.(interface{ Flush() }); ok {
				fl.Flush()
			}
			continue
		}
		select {
		case <-stop:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// copyFrom sends the bytes from *pos on (from the oldest kept when it is
// -1, skipping to the oldest kept when *pos was dropped) and moves *pos.
func copyFrom(w io.Writer, dir, stream string, pos *int64) (int64, error) {
	offs, err := segments(dir, stream)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil || len(offs) == 0 {
		return 0, err
	}
	if *pos < offs[0] {
		*pos = offs[0]
	}
	var sent int64
	for i, off := range offs {
		next := int64(-1)
		if i+1 < len(offs) {
			next = offs[i+1]
		}
		if next >= 0 && *pos >= next {
			continue
		}
		f, err := os.Open(filepath.Join(dir, segmentName(stream, off)))
		if err != nil {
			continue // dropped under us: the next one has the rest
		}
		_, err = f.Seek(*pos-off, io.SeekStart)
		if err == nil {
			r := io.Reader(f)
			if next >= 0 {
				r = io.LimitReader(f, next-*pos)
			}
			var n int64
			n, err = io.Copy(w, r)
			*pos += n
			sent += n
		}
		f.Close()
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
