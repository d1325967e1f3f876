package kernel

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/prereq"
	"github.com/google/go-cmp/cmp"
)

func TestHostMirror(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"none", nil, DefaultMirror},
		{"one-line", map[string]string{
			"etc/apt/sources.list": "# comment\ndeb-src http://src.example/debian bookworm main\n" +
				"deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n",
		}, "http://mirror.example/debian"},
		{"security and other suites skipped", map[string]string{
			"etc/apt/sources.list": "deb http://security.example/debian-security bookworm-security main\n" +
				"deb cdrom:[x]/ bookworm main\ndeb https://m.example/debian bookworm main\n",
		}, "https://m.example/debian"},
		{"deb822", map[string]string{
			"etc/apt/sources.list.d/debian.sources": "Types: deb\n# http://snapshot.example\nURIs: http://d822.example/debian\n" +
				"Suites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://sec.example/\nSuites: bookworm-security\n",
		}, "http://d822.example/debian"},
		{"deb822 disabled", map[string]string{
			"etc/apt/sources.list.d/x.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n",
		}, DefaultMirror},
		{"disabled file ignored", map[string]string{
			"etc/apt/sources.list.d/x.list.disabled": "deb http://off.example/debian bookworm main\n",
		}, DefaultMirror},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tt.files {
				os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
				if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := HostMirror(root, "bookworm"); got != tt.want {
				t.Errorf("HostMirror = %q, want %q", got, tt.want)
			}
		})
	}
}

// realInRelease returns bookworm's InRelease, cached in the fixtures dir.
func realInRelease(t *testing.T) []byte {
	t.Helper()
	if _, err := os.Stat(DebianKeyring); err != nil {
		prereq.Missing(t, "Debian archive keyring missing (apt-get install debian-archive-keyring): %v", err)
	}
	path := filepath.Join(fixturesDir(), "debian", "InRelease-bookworm")
	if data, err := os.ReadFile(path); err == nil {
		return data
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data, err := (&Store{}).get(ctx, DefaultMirror+"/dists/bookworm/InRelease")
	if err != nil {
		prereq.Missing(t, "cannot fetch InRelease (offline?): %v", err)
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, data, 0o644)
	return data
}

func TestVerifyInReleaseReal(t *testing.T) {
	good := realInRelease(t)
	rel, err := verifyInRelease(good, DebianKeyring)
	if err != nil {
		t.Fatalf("real InRelease: %v", err)
	}
	if rel.Codename != "bookworm" {
		t.Errorf("Codename = %q", rel.Codename)
	}
	if s := rel.files["main/binary-amd64/Packages.xz"]; len(s.SHA256) != 64 || s.Size == 0 {
		t.Errorf("Packages.xz sum = %+v", s)
	}

	i := bytes.Index(good, []byte("main/binary-amd64/Packages.xz"))
	tampered := bytes.Clone(good)
	tampered[i-2] ^= 1 // a digit of the size before the path
	unsigned := good[bytes.Index(good, []byte("Origin:")):]
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"tampered", tampered, "signature"},
		{"unsigned", unsigned, "not a clearsigned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifyInRelease(tt.data, DebianKeyring)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	t.Run("missing keyring", func(t *testing.T) {
		_, err := verifyInRelease(good, filepath.Join(t.TempDir(), "none.gpg"))
		if err == nil || !strings.Contains(err.Error(), "debian-archive-keyring") {
			t.Fatalf("err = %v", err)
		}
	})
}

const samplePackages = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.176+1)
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.176-1_amd64.deb
Size: 1500
SHA256: 6f32a25a6ee7b58852de01577ba261fda873c3002c736a2148bf0a6593bd93c8
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 for cloud platforms.

Package: linux-image-6.1.0-50-cloud-amd64
Version: 6.1.176-1
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/main/l/linux-signed-amd64/linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb
Size: 26484304
SHA256: EFE19F605B6F54A8352E68D85A629ABB2D30B72A085FAEF603A9152590BAA791

Package: linux-image-broken-amd64
Version: 1
Depends: linux-image-gone (= 1)
Filename: pool/x.deb

Package: hello
Version: 2.10
Filename: pool/main/h/hello/hello_2.10_amd64.deb
`

func TestResolveKernel(t *testing.T) {
	idx := parsePackages([]byte(samplePackages))
	if d := idx["linux-image-cloud-amd64"][0].Depends; !strings.HasPrefix(d, "linux-image-6.1.0-50") {
		t.Fatalf("Depends = %q", d)
	}
	tests := []struct {
		name    string
		pkg     string
		want    debPackage
		wantErr string
	}{
		{name: "metapackage", pkg: "linux-image-cloud-amd64", want: debPackage{
			Name: "linux-image-6.1.0-50-cloud-amd64", Version: "6.1.176-1",
			Depends:  "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool",
			Filename: "pool/main/l/linux-signed-amd64/linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb",
			SHA256:   "efe19f605b6f54a8352e68d85a629abb2d30b72a085faef603a9152590baa791", Size: 26484304,
		}},
		{name: "missing", pkg: "linux-image-nope", wantErr: "linux-image-nope not in the Packages index"},
		{name: "dangling dependency", pkg: "linux-image-broken-amd64", wantErr: "linux-image-gone not in the Packages index"},
		{name: "not a kernel", pkg: "hello", wantErr: "not a kernel image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveKernel(idx, tt.pkg)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}
