package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"

	"banger/internal/atomicfile"
)

// debSource is a verified kernel package found in a Debian archive.
type debSource struct {
	URL string
	Pkg debPackage
}

// findDebianKernel fetches and verifies the suite's InRelease and Packages
// index from mirror and resolves the entry's package to a kernel .deb.
func (s *Store) findDebianKernel(ctx context.Context, mirror string, e CatalogEntry, keyring string, progress Progress) (debSource, error) {
	mirror = strings.TrimRight(mirror, "/")
	dists := mirror + "/dists/" + e.Suite
	report(progress, "index")
	inRelease, err := s.get(ctx, dists+"/InRelease")
	if err != nil {
		return debSource{}, err
	}
	rel, err := verifyInRelease(inRelease, keyring)
	if err != nil {
		return debSource{}, fmt.Errorf("%s/InRelease: %w", dists, err)
	}
	if rel.Codename != e.Suite && rel.Suite != e.Suite {
		return debSource{}, fmt.Errorf("%w: %s/InRelease is for %q, not %q", ErrInvalid, dists, rel.Codename, e.Suite)
	}
	var data []byte
	// gz first: three times faster to decompress than xz here, for a few
	// more MB of download.
	for _, comp := range []string{"gz", "xz"} {
		rpath := "main/binary-" + e.Arch + "/Packages." + comp
		sum, ok := rel.files[rpath]
		if !ok {
			continue
		}
		cached := filepath.Join(s.CacheDir, "debian", sum.SHA256+"-Packages."+comp)
		if err := s.fetchFile(ctx, dists+"/"+rpath, cached, sum, "index", progress); err != nil {
			return debSource{}, err
		}
		if data, err = decompressFile(cached, comp); err != nil {
			return debSource{}, fmt.Errorf("reading %s: %w", rpath, err)
		}
		break
	}
	if data == nil {
		return debSource{}, fmt.Errorf("%w: %s/InRelease lists no Packages.xz or .gz for %s", ErrInvalid, dists, e.Arch)
	}
	pkg, err := resolveKernel(parsePackages(data), e.Package)
	if err != nil {
		return debSource{}, err
	}
	if pkg.Filename == "" || len(pkg.SHA256) != 64 {
		return debSource{}, fmt.Errorf("%w: package %s has no Filename or SHA256", ErrInvalid, pkg.Name)
	}
	return debSource{URL: mirror + "/" + pkg.Filename, Pkg: pkg}, nil
}

// fetchDeb downloads (or reuses from the cache) the verified package.
func (s *Store) fetchDeb(ctx context.Context, src debSource, progress Progress) (string, error) {
	dest := filepath.Join(s.CacheDir, "debian", "pool", path.Base(src.Pkg.Filename))
	err := s.fetchFile(ctx, src.URL, dest, fileSum{SHA256: src.Pkg.SHA256, Size: src.Pkg.Size}, "download", progress)
	return dest, err
}

// get fetches a small file into memory.
func (s *Store) get(ctx context.Context, url string) ([]byte, error) {
	resp, err := s.do(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	return data, nil
}

func (s *Store) do(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching %s: %s", url, resp.Status)
	}
	return resp, nil
}

// fetchFile downloads url to dest unless dest already holds the expected
// content. The sha256 (and size, when known) is checked before dest
// appears; a mismatch leaves nothing behind.
func (s *Store) fetchFile(ctx context.Context, url, dest string, want fileSum, phase string, progress Progress) error {
	if sum, err := fileSHA256(dest); err == nil && sum == want.SHA256 {
		s.logger().Debug("using cached download", "url", url, "path", dest)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("creating cache dir: %w", err)
	}
	resp, err := s.do(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	total := want.Size
	if total == 0 {
		total = resp.ContentLength
	}
	return atomicfile.Write(dest, 0o600, func(f *os.File) error {
		h := sha256.New()
		pw := &progressWriter{phase: phase, total: total, fn: progress}
		n, err := io.Copy(io.MultiWriter(f, h, pw), resp.Body)
		if err != nil {
			return fmt.Errorf("downloading %s: %w", url, err)
		}
		if want.Size > 0 && n != want.Size {
			return fmt.Errorf("%w: %s: got %d bytes, the signed index says %d", ErrInvalid, url, n, want.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
			return fmt.Errorf("%w: %s: sha256 %s, the signed index says %s", ErrInvalid, url, got, want.SHA256)
		}
		return nil
	})
}

type progressWriter struct {
	phase       string
	done, total int64
	last        int64
	fn          Progress
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.fn != nil && (p.done-p.last >= 1<<20 || p.done == p.total) {
		p.last = p.done
		p.fn(p.phase, p.done, p.total)
	}
	return len(b), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func decompressFile(path, comp string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch comp {
	case "xz":
		r, err = xz.NewReader(bytes.NewReader(data))
	case "gz":
		r, err = gzip.NewReader(bytes.NewReader(data))
	default:
		err = errors.New("unknown compression " + comp)
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}
