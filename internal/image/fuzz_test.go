package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
)

// Path pieces the fuzzer builds layer entries from: the names banger
// reads or writes, and the shapes that escape.
var fuzzNames = []string{
	"etc", "inittab", "os-release", "usr", "lib", "systemd", "system", "multi-user.target.wants",
	"sbin", "init", "bin", "busybox", "ssh", "sshd_config", "a", "b", "..", ".", "", "/", ".wh.a",
	".wh..wh..opq", "../..", "/etc", "/../x", "banger", "sshd",
}

// layersFromOps turns fuzz bytes into layers: each op is three bytes
// (kind, name, link target); kind 0 starts a new layer.
func layersFromOps(data []byte) []*bytes.Buffer {
	var layers []*bytes.Buffer
	cur := &bytes.Buffer{}
	tw := tar.NewWriter(cur)
	flush := func() {
		tw.Close()
		layers = append(layers, cur)
		cur = &bytes.Buffer{}
		tw = tar.NewWriter(cur)
	}
	pick := func(b byte) string { return fuzzNames[int(b)%len(fuzzNames)] }
	for i := 0; i+3 <= len(data) && len(layers) < 4; i += 3 {
		kind, a, b := data[i]%9, data[i+1], data[i+2]
		name := path.Join(pick(a), pick(a/7), pick(b/5))
		if a%3 == 0 {
			name = pick(a)
		}
		hdr := &tar.Header{Name: name, Mode: int64(b) | 0o600, ModTime: time.Unix(1, 0), Format: tar.FormatPAX}
		var body []byte
		switch kind {
		case 0:
			flush()
			continue
		case 1:
			hdr.Typeflag = tar.TypeReg
			body = bytes.Repeat([]byte{b}, int(a))
			if a%5 == 0 {
				body = []byte("ID=x\nVERSION_ID=1\n::sysinit:/x\n")
			}
		case 2:
			hdr.Typeflag = tar.TypeDir
		case 3:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, pick(b)+"/"+pick(a)
		case 4:
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, path.Join(pick(b), pick(a))
		case 5:
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeChar, 1, int64(b%9)
		case 6:
			hdr.Typeflag, hdr.Devmajor = tar.TypeBlock, 8
		case 7:
			hdr.Typeflag = tar.TypeFifo
		case 8:
			hdr.Typeflag, hdr.Name = tar.TypeReg, path.Join(pick(a), ".wh."+pick(b))
		}
		hdr.Size = int64(len(body))
		if tw.WriteHeader(hdr) == nil {
			tw.Write(body)
		}
	}
	flush()
	return layers
}

// importCheck runs the import path (read the layers, put banger's pieces
// in, emit, tar2ext4) on layers and checks what must always hold: no
// panic; an error or a stream whose every name is clean and inside the
// root; no file on the host touched but the output.
func importCheck(t *testing.T, agent string, layers []*bytes.Buffer) {
	srcs := memLayers(layers...)
	r := newRootfs(Limits{Bytes: 1 << 20, Entries: 4096})
	ctx := context.Background()
	if err := r.readLayers(ctx, srcs, func(string, int64, int64) {}); err != nil {
		return
	}
	if _, err := r.prepare(ctx, agent); err != nil {
		return
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	if err := r.emit(ctx, tw, srcs); err != nil {
		t.Fatalf("emit after a successful prepare: %v", err)
	}
	tw.Close()
	tr := tar.NewReader(bytes.NewReader(out.Bytes()))
	seen := map[string]bool{".": true}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("emitted stream: %v", err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if name == "." || name == "" {
			continue
		}
		if path.Clean(name) != name || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "../") || name == ".." {
			t.Fatalf("emitted name %q is not clean and relative", hdr.Name)
		}
		if !seen[path.Dir(name)] {
			t.Fatalf("%q emitted before its parent", name)
		}
		if hdr.Typeflag == tar.TypeDir {
			seen[name] = true
		}
	}
	img := &memFile{}
	if err := tar2ext4.ConvertTarToExt4(bytes.NewReader(out.Bytes()), img, tar2ext4.MaximumDiskSize(64<<20)); err != nil {
		t.Fatalf("tar2ext4 refused banger's stream: %v", err)
	}
}

// memFile is an in-memory io.ReadWriteSeeker.
type memFile struct {
	b   []byte
	off int64
}

func (m *memFile) Write(p []byte) (int, error) {
	if need := m.off + int64(len(p)); need > int64(len(m.b)) {
		if need > 256<<20 {
			return 0, errors.New("memFile: too big")
		}
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	copy(m.b[m.off:], p)
	m.off += int64(len(p))
	return len(p), nil
}

func (m *memFile) Read(p []byte) (int, error) {
	if m.off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += int64(n)
	return n, nil
}

func (m *memFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += m.off
	case io.SeekEnd:
		off += int64(len(m.b))
	}
	if off < 0 {
		return 0, errors.New("memFile: negative offset")
	}
	m.off = off
	return off, nil
}

// fuzzAgent is the agent binary the fuzz targets inject, and a check
// that nothing else in its directory changes.
func fuzzAgent(f *testing.F) (string, func(t *testing.T)) {
	dir := f.TempDir()
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	return agent, func(t *testing.T) {
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Fatalf("the import wrote beside the agent binary: %v", ents)
		}
	}
}

func FuzzImportOps(f *testing.F) {
	for _, seed := range [][]byte{
		{1, 1, 3, 3, 9, 14, 1, 14, 0},
		{3, 3, 22, 1, 3, 2, 0, 0, 0, 8, 3, 1, 2, 0, 21},
		{2, 5, 0, 3, 6, 7, 1, 6, 2, 4, 2, 6, 5, 2, 1, 7, 3, 3},
		{3, 0, 24, 1, 0, 3, 0, 1, 1, 4, 9, 15, 1},
	} {
		f.Add(seed)
	}
	agent, check := fuzzAgent(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		importCheck(t, agent, layersFromOps(data))
		check(t)
	})
}

func FuzzImportTar(f *testing.F) {
	for _, seed := range [][]byte{
		{1, 1, 3, 3, 9, 14, 1, 14, 0},
		{3, 3, 22, 1, 3, 2, 8, 3, 1},
	} {
		f.Add(layersFromOps(seed)[0].Bytes())
	}
	agent, check := fuzzAgent(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		importCheck(t, agent, []*bytes.Buffer{bytes.NewBuffer(data)})
		check(t)
	})
}
