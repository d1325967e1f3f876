package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"banger/internal/atomicfile"
	"banger/internal/crashpoint"
)

// ErrDigest is returned when a blob does not match its digest.
var ErrDigest = errors.New("digest mismatch")

// BlobCache keeps verified, compressed layer blobs by digest, shared by
// all pulls: <Dir>/sha256/<hex>. A blob is only ever renamed into place
// after its digest was checked, so an interrupted pull resumes with the
// layers it already has.
type BlobCache struct{ Dir string }

func (c BlobCache) path(h v1.Hash) string { return filepath.Join(c.Dir, h.Algorithm, h.Hex) }

// Has reports whether the blob h is cached.
func (c BlobCache) Has(h v1.Hash) bool {
	_, err := os.Stat(c.path(h))
	return err == nil
}

// Fetch puts layer's compressed blob into the cache unless it is there,
// reporting bytes as they arrive. It leaves no partial file behind.
func (c BlobCache) Fetch(ctx context.Context, l v1.Layer, progress func(done, total int64)) error {
	h, err := l.Digest()
	if err != nil {
		return err
	}
	if h.Algorithm != "sha256" {
		return fmt.Errorf("layer %s: unsupported digest algorithm", h)
	}
	size, _ := l.Size()
	if c.Has(h) {
		progress(size, size)
		return nil
	}
	dst := c.path(h)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", h, err)
	}
	defer rc.Close()
	err = atomicfile.Write(dst, 0o600, func(f *os.File) error {
		sum := sha256.New()
		w := &countWriter{w: io.MultiWriter(f, sum), total: size, progress: progress}
		if _, err := io.Copy(w, ctxReader{ctx, rc}); err != nil {
			// go-containerregistry checks digests itself and has no error
			// type for a mismatch; keep ours recognisable.
			if strings.Contains(err.Error(), "error verifying") {
				return fmt.Errorf("layer %s: %w: %w", h, ErrDigest, err)
			}
			return fmt.Errorf("fetching layer %s: %w", h, err)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
			return fmt.Errorf("layer %s: %w (got sha256:%s)", h, ErrDigest, got)
		}
		progress(w.n, size)
		crashpoint.Hit(crashpoint.ImageLayerWritten)
		return nil
	})
	if err == nil {
		crashpoint.Hit(crashpoint.ImageLayerCached)
	}
	return err
}

// Open returns the uncompressed tar of the cached blob h (gzip, zstd or
// plain). verify, called after the tar was read, reads the rest and checks
// the digest again; a corrupt blob is dropped from the cache.
func (c BlobCache) Open(h v1.Hash) (tr io.Reader, verify func() error, closeFn func(), err error) {
	f, err := os.Open(c.path(h))
	if err != nil {
		return nil, nil, nil, err
	}
	sum := sha256.New()
	hashed := bufio.NewReaderSize(io.TeeReader(f, sum), 1<<20)
	magic, _ := hashed.Peek(4)
	var dec io.Reader = hashed
	var closeDec func()
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(hashed)
		if err != nil {
			f.Close()
			return nil, nil, nil, fmt.Errorf("layer %s: %w", h, err)
		}
		dec, closeDec = zr, func() { zr.Close() }
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(hashed)
		if err != nil {
			f.Close()
			return nil, nil, nil, fmt.Errorf("layer %s: %w", h, err)
		}
		dec, closeDec = zr, zr.Close
	}
	closeFn = func() {
		if closeDec != nil {
			closeDec()
		}
		f.Close()
	}
	verify = func() error {
		return c.check(h, hashed, sum)
	}
	return dec, verify, closeFn, nil
}

func (c BlobCache) check(h v1.Hash, rest io.Reader, sum hash.Hash) error {
	if _, err := io.Copy(io.Discard, rest); err != nil {
		return err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		os.Remove(c.path(h))
		return fmt.Errorf("cached layer %s: %w (got sha256:%s); it was removed, pull again", h, ErrDigest, got)
	}
	return nil
}

// countWriter reports progress at most every 100ms.
type countWriter struct {
	w        io.Writer
	n, total int64
	last     time.Time
	progress func(done, total int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if now := time.Now(); now.Sub(c.last) > 100*time.Millisecond {
		c.last = now
		c.progress(c.n, c.total)
	}
	return n, err
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
