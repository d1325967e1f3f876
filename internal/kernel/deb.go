package kernel

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// debContents is what extractDeb found in a kernel package.
type debContents struct {
	Release string // from boot/vmlinuz-<release>
	Vmlinuz string // path of the extracted bzImage
	Modules string // path of the extracted lib/modules/<release>
}

// extractDeb unpacks the kernel image and the module tree of a kernel .deb
// into dir. It reads the ar archive and data.tar.{xz,zst,gz} itself.
func extractDeb(ctx context.Context, debPath, dir string) (debContents, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return debContents{}, err
	}
	defer f.Close()
	data, name, err := findArMember(bufio.NewReader(f), "data.tar")
	if err != nil {
		return debContents{}, fmt.Errorf("%w: %s: %w", ErrInvalid, debPath, err)
	}
	var r io.Reader
	switch path.Ext(name) {
	case ".xz":
		r, err = xz.NewReader(bufio.NewReaderSize(data, 1<<20))
	case ".zst":
		var zr *zstd.Decoder
		zr, err = zstd.NewReader(data)
		if err == nil {
			defer zr.Close()
			r = zr
		}
	case ".gz":
		r, err = gzip.NewReader(data)
	case ".tar":
		r = data
	default:
		err = fmt.Errorf("unsupported member %s", name)
	}
	if err != nil {
		return debContents{}, fmt.Errorf("%w: %s: %w", ErrInvalid, debPath, err)
	}
	c, err := extractKernelTar(ctx, tar.NewReader(r), dir)
	if err != nil {
		return debContents{}, fmt.Errorf("extracting %s: %w", debPath, err)
	}
	return c, nil
}

// findArMember reads an ar archive up to the first member whose name
// starts with prefix and returns a reader limited to that member.
func findArMember(r io.Reader, prefix string) (io.Reader, string, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, "", fmt.Errorf("not a .deb (ar) archive")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return nil, "", fmt.Errorf("no %s member in the archive", prefix)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, "", fmt.Errorf("corrupt ar member header")
		}
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("corrupt ar member size %q", hdr[48:58])
		}
		if strings.HasPrefix(name, prefix) {
			return io.LimitReader(r, size), name, nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, "", fmt.Errorf("truncated ar archive")
		}
	}
}

// extractKernelTar writes boot/vmlinuz-* and lib/modules/** (also under
// usr/) below dir, with the paths they have in the package.
func extractKernelTar(ctx context.Context, tr *tar.Reader, dir string) (debContents, error) {
	var c debContents
	for {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, fmt.Errorf("%w: reading data.tar: %w", ErrInvalid, err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		name = strings.TrimPrefix(name, "usr/")
		keep := strings.HasPrefix(name, "lib/modules/") || strings.HasPrefix(name, "boot/vmlinuz-")
		if !keep {
			continue
		}
		if rel, ok := strings.CutPrefix(name, "boot/vmlinuz-"); ok && h.Typeflag == tar.TypeReg {
			c.Release = rel
		}
		if err := writeTarEntry(tr, h, filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			return c, err
		}
	}
	if c.Release == "" {
		return c, fmt.Errorf("%w: no boot/vmlinuz-* in the package", ErrInvalid)
	}
	c.Vmlinuz = filepath.Join(dir, "boot", "vmlinuz-"+c.Release)
	c.Modules = filepath.Join(dir, "lib", "modules", c.Release)
	if _, err := os.Stat(c.Modules); err != nil {
		return c, fmt.Errorf("%w: no lib/modules/%s in the package", ErrInvalid, c.Release)
	}
	return c, nil
}

func writeTarEntry(tr *tar.Reader, h *tar.Header, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		return os.MkdirAll(dest, 0o755)
	case tar.TypeSymlink:
		// Only links inside the module tree matter (build/source links
		// point outside and are useless in the guest).
		if path.IsAbs(h.Linkname) || strings.Contains(h.Linkname, "..") {
			return nil
		}
		return os.Symlink(h.Linkname, dest)
	case tar.TypeReg:
		f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o400)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return fmt.Errorf("%w: reading %s from data.tar: %w", ErrInvalid, h.Name, err)
		}
		return f.Close()
	}
	return nil
}
