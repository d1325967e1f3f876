package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

const mirrorAddr = "127.0.0.1:8089"

// debMirror is a Debian-layout mirror of one suite holding the fixture
// kernel package, signed with a key of the test's own.
type debMirror struct {
	t        *testing.T
	dir      string
	deb      []byte // the package as Packages describes it
	debPath  string // where the mirror serves it
	key      *openpgp.Entity
	packages []byte // Packages.gz as Release lists it
}

func newDebMirror(t *testing.T, deb string) *debMirror {
	t.Helper()
	key, err := openpgp.NewEntity("banger e2e", "test mirror", "e2e@banger.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	m := &debMirror{t: t, dir: t.TempDir(), deb: data, key: key}
	fields := strings.Fields(run(t, "dpkg-deb", "-f", deb, "Package", "Version"))
	pkg, ver := fields[1], fields[3]
	filename := "pool/main/l/linux-signed-amd64/" + filepath.Base(deb)
	m.debPath = filepath.Join(m.dir, filename)
	sum := sha256.Sum256(data)
	index := fmt.Sprintf("Package: linux-image-cloud-amd64\nArchitecture: amd64\nVersion: %s\nDepends: %s (= %s)\n\n"+
		"Package: %s\nArchitecture: amd64\nVersion: %s\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
		ver, pkg, ver, pkg, ver, filename, len(data), hex.EncodeToString(sum[:]))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(index))
	zw.Close()
	m.packages = gz.Bytes()
	m.serve(m.deb, m.packages, key)
	return m
}

// serve writes the mirror: deb in the pool, packages as Packages.gz, and
// an InRelease listing m.packages's hash, clearsigned by signer.
func (m *debMirror) serve(deb, packages []byte, signer *openpgp.Entity) {
	m.t.Helper()
	sum := sha256.Sum256(m.packages)
	release := fmt.Sprintf("Origin: Debian\nSuite: stable\nCodename: bookworm\nDate: %s\nArchitectures: amd64\nComponents: main\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n",
		time.Now().UTC().Format(time.RFC1123), hex.EncodeToString(sum[:]), len(m.packages))
	var signed bytes.Buffer
	w, err := clearsign.Encode(&signed, signer.PrivateKey, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	w.Write([]byte(release))
	w.Close()
	dists := filepath.Join(m.dir, "dists", "bookworm")
	for p, b := range map[string][]byte{
		filepath.Join(dists, "InRelease"):                           signed.Bytes(),
		filepath.Join(dists, "main", "binary-amd64", "Packages.gz"): packages,
		m.debPath: deb,
	} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			m.t.Fatal(err)
		}
	}
}

// keyring writes the public half of the mirror's key as a binary keyring.
func (m *debMirror) keyring() string {
	m.t.Helper()
	var b bytes.Buffer
	if err := m.key.Serialize(&b); err != nil {
		m.t.Fatal(err)
	}
	p := filepath.Join(m.t.TempDir(), "test-keyring.gpg")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		m.t.Fatal(err)
	}
	return p
}

// kernel pull verifies what it downloads from a mirror: an InRelease
// signed by a key not in debian_keyring, a Packages index whose hash is
// not the one InRelease lists and a package whose hash is not the one in
// Packages are refused, leaving no kernel and no partial download; the
// real mirror layout, signed by the configured key, gives a working
// kernel bundle.
func TestKernelPullLocalMirror(t *testing.T) {
	e := newEnv(t)
	m := newDebMirror(t, fixtureDeb(t))
	srv := exec.Command("ip", "netns", "exec", e.ns, "busybox", "httpd", "-f", "-p", mirrorAddr, "-h", m.dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	os.MkdirAll(filepath.Join(e.home, "config"), 0o755)
	cfg := fmt.Sprintf("debian_mirror = \"http://%s\"\ndebian_keyring = %q\n", mirrorAddr, m.keyring())
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := openpgp.NewEntity("not the mirror", "", "other@banger.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	badDeb := append(bytes.Clone(m.deb[:len(m.deb)-1]), m.deb[len(m.deb)-1]^0xff)
	badPackages := bytes.Clone(m.packages) // same size, other hash
	badPackages[len(badPackages)/2] ^= 0xff
	for _, tc := range []struct {
		name          string
		deb, packages []byte
		signer        *openpgp.Entity
		want          string
	}{
		{"InRelease signed by another key", m.deb, m.packages, other, "signature"},
		{"Packages not as InRelease lists it", m.deb, badPackages, m.key, "Packages.gz: sha256"},
		{"package not as Packages lists it", badDeb, m.packages, m.key, "sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.serve(tc.deb, tc.packages, tc.signer)
			msg := e.fails("kernel", "pull", "generic-6.1")
			t.Logf("kernel pull: %s", msg)
			mustContain(t, "kernel pull error", msg, tc.want)
			if out := e.ok("kernel", "list", "--json"); strings.Contains(out, "generic-6.1") {
				t.Fatalf("a refused pull left a kernel: %s", out)
			}
			noHiddenFiles(t, filepath.Join(e.home, "state", "kernels"), filepath.Join(e.home, "cache", "downloads"))
		})
	}
	m.serve(m.deb, m.packages, m.key)
	e.ok("kernel", "pull", "generic-6.1")
	var k struct{ Release, Source, SHA256, Kernel, Initrd string }
	json.Unmarshal([]byte(e.ok("kernel", "inspect", "generic-6.1", "--json")), &k)
	sum := sha256.Sum256(m.deb)
	if k.SHA256 != hex.EncodeToString(sum[:]) || !strings.HasPrefix(k.Source, "http://"+mirrorAddr+"/pool/") || k.Release == "" || k.Initrd == "" {
		t.Fatalf("kernel inspect after the pull: %+v", k)
	}
	for _, p := range []string{k.Kernel, k.Initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("pulled bundle: %v", err)
		}
	}
}

// noHiddenFiles fails the test when a temp (dot) file or directory is
// left under dirs.
func noHiddenFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && p != dir && strings.HasPrefix(fi.Name(), ".") {
				t.Errorf("left behind: %s", p)
			}
			return nil
		})
	}
}
