package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/crashpoint"
)

// Pull builds the catalog kernel name from the Debian archive at mirror
// (empty: the host's apt mirror, else DefaultMirror). The InRelease
// signature is checked against s.Keyring (default DebianKeyring), then the Packages index
// hash, then the package's sha256. Downloads are cached in CacheDir. It
// fails with ErrExist when the bundle exists, and leaves nothing behind
// on error or cancellation.
func (s *Store) Pull(ctx context.Context, name, mirror string, progress Progress) (Bundle, error) {
	keyring := s.Keyring
	if keyring == "" {
		keyring = DebianKeyring
	}
	return s.pull(ctx, name, mirror, keyring, progress)
}

func (s *Store) pull(ctx context.Context, name, mirror, keyring string, progress Progress) (Bundle, error) {
	entry, ok := Catalog[name]
	if !ok {
		return Bundle{}, fmt.Errorf("%w: unknown kernel %q (valid: %s)", ErrInvalid, name, strings.Join(CatalogNames(), ", "))
	}
	if mirror == "" {
		mirror = HostMirror("/", entry.Suite)
	}
	st, err := s.stage(name)
	if err != nil {
		return Bundle{}, err
	}
	defer st.discard()
	src, err := s.findDebianKernel(ctx, mirror, entry, keyring, progress)
	if err != nil {
		return Bundle{}, fmt.Errorf("pulling %s: %w", name, err)
	}
	s.logger().Info("kernel package found", "name", name, "package", src.Pkg.Name, "version", src.Pkg.Version, "url", src.URL)
	deb, err := s.fetchDeb(ctx, src, progress)
	if err != nil {
		return Bundle{}, fmt.Errorf("pulling %s: %w", name, err)
	}
	crashpoint.Hit(crashpoint.KernelAfterFetch)
	m, err := s.buildFromDeb(ctx, st, deb, progress)
	if err != nil {
		return Bundle{}, fmt.Errorf("pulling %s: %w", name, err)
	}
	m.Source, m.SHA256 = src.URL, src.Pkg.SHA256
	return st.commit(ctx, m)
}

// ImportDeb builds a bundle from a local Debian kernel package. An empty
// name means the kernel's release (e.g. 6.1.0-50-cloud-amd64).
func (s *Store) ImportDeb(ctx context.Context, debPath, name string, progress Progress) (Bundle, error) {
	st, err := s.stage(name)
	if err != nil {
		return Bundle{}, err
	}
	defer st.discard()
	crashpoint.Hit(crashpoint.KernelImportStarted)
	sum, err := fileSHA256(debPath)
	if err != nil {
		return Bundle{}, fmt.Errorf("importing %s: %w", debPath, err)
	}
	m, err := s.buildFromDeb(ctx, st, debPath, progress)
	if err != nil {
		return Bundle{}, fmt.Errorf("importing %s: %w", debPath, err)
	}
	if st.name == "" {
		st.name = m.Release
	}
	abs, _ := filepath.Abs(debPath)
	m.Source, m.SHA256 = abs, sum
	return st.commit(ctx, m)
}

// buildFromDeb fills the staging dir from a kernel .deb.
func (s *Store) buildFromDeb(ctx context.Context, st *staging, deb string, progress Progress) (manifest, error) {
	if s.AgentBin == "" {
		return manifest{}, fmt.Errorf("no agent binary configured for the initrd")
	}
	if err := checkStaticELF(s.AgentBin); err != nil {
		return manifest{}, fmt.Errorf("agent binary %s: %w", s.AgentBin, err)
	}
	work := st.path(".work")
	defer os.RemoveAll(work)
	report(progress, "extract")
	c, err := extractDeb(ctx, deb, work)
	if err != nil {
		return manifest{}, err
	}
	m := manifest{Release: c.Release, CreatedAt: time.Now().UTC(), Initrd: "initrd.img", Modules: "modules.ext4"}
	if err := os.Rename(c.Vmlinuz, st.path("vmlinuz")); err != nil {
		return m, err
	}
	m.Kernel = "vmlinuz"
	if err := writeVmlinux(st.path("vmlinuz"), st.path("vmlinux")); err != nil {
		s.logger().Info("booting the bzImage: no PVH vmlinux", "reason", err)
	} else {
		m.Kernel = "vmlinux"
	}
	report(progress, "initrd")
	if err := buildInitrd(ctx, st.path(m.Initrd), s.AgentBin, c.Modules, c.Release); err != nil {
		return m, fmt.Errorf("building initrd: %w", err)
	}
	crashpoint.Hit(crashpoint.KernelAfterInitrd)
	report(progress, "modules")
	if err := depmod(ctx, work, c.Release); err != nil {
		return m, err
	}
	if err := buildModulesImage(ctx, c.Modules, st.path(m.Modules)); err != nil {
		return m, fmt.Errorf("building module image: %w", err)
	}
	return m, ctx.Err()
}

// Register makes a bundle from a plain kernel (bzImage or ELF vmlinux)
// and an optional initrd ("" for none). Without an initrd the kernel must
// have its virtio drivers built in. The files are copied into the store.
func (s *Store) Register(ctx context.Context, name, kernelPath, initrdPath string) (Bundle, error) {
	if name == "" {
		return Bundle{}, fmt.Errorf("%w: a kernel name is required", ErrInvalid)
	}
	data, err := os.ReadFile(kernelPath)
	if err != nil {
		return Bundle{}, fmt.Errorf("registering kernel: %w", err)
	}
	kind, err := kernelKind(data)
	if err != nil {
		return Bundle{}, fmt.Errorf("registering %s: %w", kernelPath, err)
	}
	st, err := s.stage(name)
	if err != nil {
		return Bundle{}, err
	}
	defer st.discard()
	sum := sha256.Sum256(data)
	abs, _ := filepath.Abs(kernelPath)
	m := manifest{
		Release: kernelRelease(data), Source: abs, SHA256: hex.EncodeToString(sum[:]),
		CreatedAt: time.Now().UTC(), Kernel: "vmlinuz",
	}
	if kind == "elf" {
		m.Kernel = "vmlinux"
	}
	if err := writeFileSync(st.path(m.Kernel), data); err != nil {
		return Bundle{}, fmt.Errorf("registering kernel: %w", err)
	}
	if initrdPath != "" {
		if err := VerifyInitrd(initrdPath); err != nil {
			return Bundle{}, fmt.Errorf("registering initrd %s: %w", initrdPath, err)
		}
		m.Initrd = "initrd.img"
		if err := copyFile(initrdPath, st.path(m.Initrd)); err != nil {
			return Bundle{}, fmt.Errorf("registering initrd: %w", err)
		}
	}
	return st.commit(ctx, m)
}

// VerifyInitrd checks that file is an initrd the kernel can unpack: an
// uncompressed cpio newc archive is walked to its trailer and a gzip one
// is read to the end; other compressions are recognised by magic only.
func VerifyInitrd(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 6)
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("%w: too short to be an initrd", ErrInvalid)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	switch {
	case bytes.HasPrefix(head, []byte("0707")):
		if err := walkCpio(bufio.NewReader(f)); err != nil {
			return fmt.Errorf("%w: corrupt cpio initrd: %w", ErrInvalid, err)
		}
		return nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(f)
		if err == nil {
			_, err = io.Copy(io.Discard, zr)
		}
		if err != nil {
			return fmt.Errorf("%w: corrupt gzip initrd: %w", ErrInvalid, err)
		}
		return nil
	}
	magics := [][]byte{
		{0xfd, '7', 'z', 'X', 'Z', 0}, // xz
		{0x28, 0xb5, 0x2f, 0xfd},      // zstd
		{0x02, 0x21, 0x4c, 0x18},      // lz4 legacy
		[]byte("BZh"), {0x5d, 0, 0},   // bzip2, lzma
	}
	for _, m := range magics {
		if bytes.HasPrefix(head, m) {
			return nil
		}
	}
	return fmt.Errorf("%w: not an initrd (neither cpio nor a compression the kernel knows)", ErrInvalid)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
