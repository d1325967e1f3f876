package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"banger/internal/disk"
	"banger/internal/guest"
)

// A bundle is a zstd-compressed tar of manifest.json then rootfs.ext4,
// published with its sha256 so a team can host its own images.

// ExportBundle writes image name as a bundle to out (atomically) and
// returns the bundle's sha256.
func (s *Store) ExportBundle(ctx context.Context, name, out string, progress Progress) (string, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	im, err := s.Get(name)
	if err != nil {
		return "", err
	}
	man := im
	man.Rootfs = ""
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return "", err
	}
	in, err := os.Open(im.Rootfs)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	sum := sha256.New()
	err = writeAtomicWith(out, 0o644, func(w io.Writer) error {
		zw, err := zstd.NewWriter(io.MultiWriter(w, sum), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return err
		}
		tw := tar.NewWriter(zw)
		if err := tw.WriteHeader(&tar.Header{Name: manifestFile, Mode: 0o644, Size: int64(len(mb)), ModTime: im.CreatedAt}); err != nil {
			return err
		}
		if _, err := tw.Write(mb); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rootfsFile, Mode: 0o644, Size: st.Size(), ModTime: im.CreatedAt}); err != nil {
			return err
		}
		cw := &countWriter{w: tw, total: st.Size(), progress: func(d, t int64) { progress("exporting "+name, d, t) }}
		if _, err := io.Copy(cw, ctxReader{ctx, in}); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return "", fmt.Errorf("exporting %s: %w", name, err)
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// ImportOptions says how to import a bundle.
type ImportOptions struct {
	Name     string // "" keeps the bundle's name
	SHA256   string // expected sha256 of the bundle; "" skips the check
	Replace  bool   // replace an image of that name
	Progress Progress
}

// ImportURL imports a bundle from a local path or an http(s) URL.
func (s *Store) ImportURL(ctx context.Context, src string, o ImportOptions) (Image, error) {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		f, err := os.Open(src)
		if err != nil {
			return Image{}, fmt.Errorf("%w: bundle %s: %w", ErrInvalid, src, err)
		}
		defer f.Close()
		st, _ := f.Stat()
		return s.ImportBundle(ctx, f, st.Size(), "file://"+src, o)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Image{}, fmt.Errorf("fetching bundle: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Image{}, fmt.Errorf("fetching bundle %s: %s", src, resp.Status)
	}
	return s.ImportBundle(ctx, resp.Body, resp.ContentLength, src, o)
}

// ImportBundle reads a bundle of size bytes (-1 if unknown) from r into
// the store. The bundle's sha256 is checked (when o.SHA256 is set) before
// the image is committed; on any error nothing is left behind.
func (s *Store) ImportBundle(ctx context.Context, r io.Reader, size int64, source string, o ImportOptions) (Image, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	sum := sha256.New()
	counted := &countWriter{w: sum, total: size, progress: func(d, t int64) { progress("importing bundle", d, t) }}
	zr, err := zstd.NewReader(io.TeeReader(ctxReader{ctx, r}, counted))
	if err != nil {
		return Image{}, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var im Image
	hdr, err := tr.Next()
	if err != nil || hdr.Name != manifestFile {
		return Image{}, fmt.Errorf("%w: %s is not a banger bundle (want %s first)", ErrInvalid, source, manifestFile)
	}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&im); err != nil {
		return Image{}, fmt.Errorf("%w: bundle manifest: %w", ErrInvalid, err)
	}
	if o.Name != "" {
		im.Name = o.Name
	}
	if err := ValidName(im.Name); err != nil {
		return Image{}, err
	}
	if _, err := s.Get(im.Name); err == nil && !o.Replace {
		return Image{}, fmt.Errorf("%q: %w (delete it first: banger image delete %s)", im.Name, ErrExist, im.Name)
	}
	stage, err := s.stage(im.Name)
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(stage)
	if hdr, err = tr.Next(); err != nil || hdr.Name != rootfsFile || hdr.Typeflag != tar.TypeReg {
		return Image{}, fmt.Errorf("%w: %s has no %s", ErrInvalid, source, rootfsFile)
	}
	if max := s.Limits.orDefault().Bytes; hdr.Size > max {
		return Image{}, fmt.Errorf("%w: the bundle's rootfs is %s, more than image_max_bytes (%s)", ErrTooBig, human(hdr.Size), human(max))
	}
	if err := writeSparse(filepath.Join(stage, rootfsFile), tr, hdr.Size); err != nil {
		return Image{}, fmt.Errorf("importing %s: %w", source, err)
	}
	if _, err := io.Copy(io.Discard, ctxReader{ctx, zr}); err != nil {
		return Image{}, fmt.Errorf("importing %s: %w", source, err)
	}
	got := hex.EncodeToString(sum.Sum(nil))
	if o.SHA256 != "" && !strings.EqualFold(got, o.SHA256) {
		return Image{}, fmt.Errorf("%w: bundle %s has sha256 %s, want %s", ErrDigest, source, got, o.SHA256)
	}
	if err := s.refreshAgent(ctx, filepath.Join(stage, rootfsFile)); err != nil {
		return Image{}, fmt.Errorf("importing %s: %w", source, err)
	}
	im.Source, im.Digest, im.SizeBytes, im.Injected = source, "sha256:"+got, hdr.Size, true
	if err := s.commitReplace(stage, im); err != nil {
		return Image{}, err
	}
	return s.Get(im.Name)
}

// writeSparse writes n bytes from r to path, leaving zero blocks as holes.
func writeSparse(path string, r io.Reader, n int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 4096)
	var off int64
	for off < n {
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-off)])
		if err != nil {
			return fmt.Errorf("rootfs truncated at %d of %d bytes: %w", off, n, err)
		}
		for i := 0; i < m; i += len(zero) {
			chunk := buf[i:min(i+len(zero), m)]
			if !bytes.Equal(chunk, zero[:len(chunk)]) {
				if _, err := f.WriteAt(chunk, off+int64(i)); err != nil {
					return err
				}
			}
		}
		off += int64(m)
	}
	if err := f.Truncate(n); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// refreshAgent puts this banger's agent into img when the one there
// differs (a bundle made by another banger version), so host and guest
// speak the same protocol. An unchanged agent leaves img byte-identical.
func (s *Store) refreshAgent(ctx context.Context, img string) error {
	want, err := os.ReadFile(s.AgentBin)
	if err != nil {
		return fmt.Errorf("reading banger-agent: %w", err)
	}
	if have, err := disk.ReadFile(ctx, img, guest.AgentPath); err == nil && bytes.Equal(have, want) {
		return nil
	}
	return s.inject(ctx, img)
}
