package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/prereq"
	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ulikunitz/xz"
)

// testMirror is a Debian archive served on 127.0.0.1, signed with a key
// made by the test, that serves the real kernel package.
type testMirror struct {
	url     string
	keyring string // binary public keyring that trusts signer
}

type mirrorOpts struct {
	signer      *openpgp.Entity // signs InRelease (default: the trusted key)
	dropMeta    bool            // leave linux-image-cloud-amd64 out of Packages
	corruptDeb  bool            // serve the .deb with one byte flipped
	badIndexSum bool            // Release lists a wrong Packages.xz sha256
}

func newEntity(t *testing.T) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("banger test", "", "test@banger.invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newTestMirror(t *testing.T, deb string, o mirrorOpts) testMirror {
	t.Helper()
	trusted := newEntity(t)
	keyring := filepath.Join(t.TempDir(), "keyring.gpg")
	var kb bytes.Buffer
	if err := trusted.Serialize(&kb); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(keyring, kb.Bytes(), 0o644)
	if o.signer == nil {
		o.signer = trusted
	}
	debData, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	debSum := sha256.Sum256(debData)
	base := filepath.Base(deb)
	realName := strings.SplitN(base, "_", 2)[0]
	pkgs := fmt.Sprintf("Package: %s\nVersion: 1\nFilename: pool/main/l/%s\nSize: %d\nSHA256: %x\n\n",
		realName, base, len(debData), debSum)
	if !o.dropMeta {
		pkgs += fmt.Sprintf("Package: linux-image-cloud-amd64\nVersion: 1\nDepends: %s (= 1)\nFilename: pool/meta.deb\nSize: 1\nSHA256: %064d\n", realName, 0)
	}
	var xzBuf bytes.Buffer
	xw, _ := xz.NewWriter(&xzBuf)
	xw.Write([]byte(pkgs))
	xw.Close()
	idxSum := sha256.Sum256(xzBuf.Bytes())
	if o.badIndexSum {
		idxSum[0] ^= 1
	}
	var rel bytes.Buffer
	pw, err := clearsign.Encode(&rel, o.signer.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(pw, "Origin: Test\nCodename: bookworm\nSHA256:\n %x %d main/binary-amd64/Packages.xz\n", idxSum, xzBuf.Len())
	pw.Close()
	if o.corruptDeb {
		debData = bytes.Clone(debData)
		debData[len(debData)/2] ^= 1
	}
	files := map[string][]byte{
		"/debian/dists/bookworm/InRelease":                     rel.Bytes(),
		"/debian/dists/bookworm/main/binary-amd64/Packages.xz": xzBuf.Bytes(),
		"/debian/pool/main/l/" + base:                          debData,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return testMirror{url: srv.URL + "/debian", keyring: keyring}
}

func newTestStore(t *testing.T, agent string) *Store {
	t.Helper()
	d := t.TempDir()
	return &Store{Dir: filepath.Join(d, "kernels"), CacheDir: filepath.Join(d, "cache"), AgentBin: agent}
}

// assertEmpty checks that a failed build left no bundle or temp dir behind.
func assertEmpty(t *testing.T, s *Store) {
	t.Helper()
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		t.Errorf("left behind in the store: %s", e.Name())
	}
	debs, _ := filepath.Glob(filepath.Join(s.CacheDir, "debian", "pool", "*"))
	for _, d := range debs {
		t.Errorf("left behind in the cache: %s", d)
	}
}

func TestPullFromMirror(t *testing.T) {
	deb := realDeb(t)
	agent := realAgent(t)
	tests := []struct {
		name    string
		opts    func(t *testing.T) mirrorOpts
		wantErr string
	}{
		{"bad signature", func(t *testing.T) mirrorOpts { return mirrorOpts{signer: newEntity(t)} }, "InRelease signature"},
		{"missing package", func(*testing.T) mirrorOpts { return mirrorOpts{dropMeta: true} }, "linux-image-cloud-amd64 not in the Packages index"},
		{"wrong package hash", func(*testing.T) mirrorOpts { return mirrorOpts{corruptDeb: true} }, "the signed index says"},
		{"wrong index hash", func(*testing.T) mirrorOpts { return mirrorOpts{badIndexSum: true} }, "Packages.xz: sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMirror(t, deb, tt.opts(t))
			s := newTestStore(t, agent)
			_, err := s.pull(context.Background(), "generic-6.1", m.url, m.keyring, nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.wantErr)
			}
			assertEmpty(t, s)
		})
	}

	t.Run("unknown name", func(t *testing.T) {
		_, err := newTestStore(t, agent).Pull(context.Background(), "generic-9.9", "", nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "valid: generic-6.1") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("ok", func(t *testing.T) {
		m := newTestMirror(t, deb, mirrorOpts{})
		s := newTestStore(t, agent)
		var phases []string
		b, err := s.pull(context.Background(), "generic-6.1", m.url, m.keyring, func(phase string, _, _ int64) {
			if len(phases) == 0 || phases[len(phases)-1] != phase {
				phases = append(phases, phase)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("bundle %+v, phases %v", b, phases)
		checkBundle(t, b)
		sum, _ := fileSHA256(deb)
		if b.SHA256 != sum || !strings.HasPrefix(b.Source, m.url) {
			t.Errorf("source %q sha256 %q, want %s from the mirror", b.Source, b.SHA256, sum)
		}
		if _, err := s.pull(context.Background(), "generic-6.1", m.url, m.keyring, nil); !errors.Is(err, ErrExist) {
			t.Errorf("second pull: err = %v, want ErrExist", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.ImportDeb(ctx, deb, "cancelled", nil); err == nil {
			t.Error("ImportDeb with a cancelled ctx succeeded")
		}
		if _, err := s.Get("cancelled"); !errors.Is(err, ErrNotExist) {
			t.Errorf("cancelled import left a bundle: %v", err)
		}
	})
}

// checkBundle checks what a user of the bundle relies on.
func checkBundle(t *testing.T, b Bundle) {
	t.Helper()
	if !strings.HasPrefix(b.Release, "6.1.0-") || filepath.Base(b.Kernel) != "vmlinux" {
		t.Errorf("release %q kernel %q", b.Release, b.Kernel)
	}
	for _, p := range []string{b.Kernel, b.Initrd, b.Modules} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if err := VerifyInitrd(b.Initrd); err != nil {
		t.Errorf("initrd: %v", err)
	}
}

func TestImportDebAndStore(t *testing.T) {
	deb := realDeb(t)
	s := newTestStore(t, realAgent(t))
	b, err := s.ImportDeb(context.Background(), deb, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, b)
	if b.Name != b.Release {
		t.Errorf("default name %q, want the release %q", b.Name, b.Release)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != b.Name {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := s.Delete(b.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(b.Name); !errors.Is(err, ErrNotExist) {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := s.Delete(b.Name); !errors.Is(err, ErrNotExist) {
		t.Errorf("Delete twice: %v", err)
	}
	assertEmpty(t, s)

	t.Run("dynamic agent rejected", func(t *testing.T) {
		s := newTestStore(t, "/bin/ls")
		_, err := s.ImportDeb(context.Background(), deb, "x", nil)
		if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Fatalf("err = %v", err)
		}
		assertEmpty(t, s)
	})
}

func TestRegister(t *testing.T) {
	c := extractedDeb(t)
	dir := t.TempDir()
	vmlinux := filepath.Join(dir, "vmlinux")
	if err := writeVmlinux(c.Vmlinuz, vmlinux); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("070701 pretend cpio"))
	zw.Close()
	goodGz := write("good.gz", gz.Bytes())
	badGz := write("bad.gz", gz.Bytes()[:gz.Len()-6])
	junk := write("junk", []byte("#!/bin/sh\necho not a kernel\n"))
	tests := []struct {
		name, kernel, initrd string
		wantKernel           string
		wantErr              string
	}{
		{name: "bzimage", kernel: c.Vmlinuz, initrd: goodGz, wantKernel: "vmlinuz"},
		{name: "elf", kernel: vmlinux, wantKernel: "vmlinux"},
		{name: "junk kernel", kernel: junk, wantErr: "not a Linux kernel"},
		{name: "corrupt initrd", kernel: c.Vmlinuz, initrd: badGz, wantErr: "corrupt gzip initrd"},
		{name: "junk initrd", kernel: c.Vmlinuz, initrd: junk, wantErr: "not an initrd"},
		{name: "missing kernel", kernel: filepath.Join(dir, "nope"), wantErr: "no such file"},
	}
	s := newTestStore(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "-")
			b, err := s.Register(context.Background(), name, tt.kernel, tt.initrd)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, err := s.Get(name); !errors.Is(err, ErrNotExist) {
					t.Errorf("failed register left a bundle: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(b.Kernel) != tt.wantKernel || b.Release != c.Release {
				t.Errorf("bundle %+v", b)
			}
			data, _ := os.ReadFile(tt.kernel)
			sum := sha256.Sum256(data)
			if b.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("sha256 %s", b.SHA256)
			}
			if (tt.initrd == "") != (b.Initrd == "") {
				t.Errorf("initrd %q", b.Initrd)
			}
		})
	}
	if _, err := s.Register(context.Background(), "bzimage", c.Vmlinuz, ""); !errors.Is(err, ErrExist) {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := s.Register(context.Background(), "../evil", c.Vmlinuz, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
}

// TestPullReal pulls generic-6.1 from the real Debian archive (the host's
// mirror): about 35 MB. Set BANGER_TEST_REAL_PULL=1 to run it.
func TestPullReal(t *testing.T) {
	if os.Getenv("BANGER_TEST_REAL_PULL") == "" {
		prereq.ByDesign(t, "set BANGER_TEST_REAL_PULL=1 to pull from the real Debian archive")
	}
	s := newTestStore(t, realAgent(t))
	start := time.Now()
	b, err := s.Pull(context.Background(), "generic-6.1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pulled %s (%s) from %s in %s", b.Name, b.Release, b.Source, time.Since(start).Round(time.Millisecond))
	checkBundle(t, b)
	start = time.Now()
	if err := s.Delete(b.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), "generic-6.1", "", nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("second pull (cached downloads) in %s", time.Since(start).Round(time.Millisecond))
}

// RemoveStale, run at a daemon's start, removes the builds an earlier
// (killed) daemon left and interrupted deletes, and leaves alone bundles
// and builds begun since.
func TestRemoveStale(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for _, d := range []string{"k1", ".tmp-k2-123", ".tmp--456", ".del-k3-789", ".tmp-new-1"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now().Add(time.Second)
	os.Chtimes(filepath.Join(s.Dir, ".tmp-new-1"), started.Add(time.Second), started.Add(time.Second))
	s.RemoveStale(started)
	ents, _ := os.ReadDir(s.Dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{".tmp-new-1", "k1"}; !slices.Equal(left, want) {
		t.Fatalf("after RemoveStale: %v, want %v", left, want)
	}
}
