// Package kernel manages kernel bundles: a kernel image, an initrd that
// loads the guest's virtio modules and hands over to the rootfs, and a
// read-only ext4 image of the full module tree. Bundles come from Debian's
// cloud kernel package (fetched and verified from a Debian mirror, or a
// local .deb), or from a plain vmlinux/bzImage the user registers.
//
// A bundle lives in its own directory under Store.Dir:
//
//	<Dir>/<name>/manifest.json
//	<Dir>/<name>/vmlinux       PVH ELF, when it could be extracted
//	<Dir>/<name>/vmlinuz       the bzImage as shipped
//	<Dir>/<name>/initrd.img    cpio newc, /init is banger-agent
//	<Dir>/<name>/modules.ext4  lib/modules/<release>, read-only in the guest
package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"banger/internal/crashpoint"
)

// Sentinel errors. Wrap them with %w.
var (
	// ErrNotExist reports that no bundle has the given name.
	ErrNotExist = errors.New("kernel not found")
	// ErrExist reports that a bundle with the given name already exists.
	ErrExist = errors.New("kernel already exists")
	// ErrInvalid reports bad input: an unknown catalog name, a file that is
	// not a kernel, a package that fails verification.
	ErrInvalid = errors.New("invalid kernel input")
)

// Catalog names the kernels Pull knows how to build.
var Catalog = map[string]CatalogEntry{
	"generic-6.1": {Suite: "bookworm", Arch: "amd64", Package: "linux-image-cloud-amd64"},
}

// CatalogEntry says which Debian package a catalog kernel is built from.
type CatalogEntry struct {
	Suite   string
	Arch    string
	Package string
}

// Bundle describes one kernel bundle. Paths are absolute.
type Bundle struct {
	Name      string    `json:"name"`
	Release   string    `json:"release,omitempty"` // uname -r, e.g. 6.1.0-50-cloud-amd64
	Kernel    string    `json:"kernel"`            // vmlinux (PVH ELF) or bzImage
	Initrd    string    `json:"initrd,omitempty"`
	Modules   string    `json:"modules,omitempty"` // ext4 image of lib/modules/<release>
	Source    string    `json:"source"`            // URL or file it was built from
	SHA256    string    `json:"sha256,omitempty"`  // of the package or kernel file
	CreatedAt time.Time `json:"created_at"`
}

// Progress reports how far a long operation got: its phase ("index",
// "download", "extract", "initrd", "modules") and, when known, how much
// of the total is done (total 0: unknown). It is the same type as
// image.Progress, so one callback serves both stores.
type Progress = func(phase string, done, total int64)

// Store keeps kernel bundles under Dir (e.g. /var/lib/banger/kernels).
// Its methods are safe for concurrent use: bundles are built in a temp
// directory beside Dir and renamed into place, so a reader sees a bundle
// whole or not at all, and of two builds of one name the second fails
// with ErrExist.
type Store struct {
	Dir      string       // one sub-directory per bundle
	CacheDir string       // downloaded indexes and packages
	AgentBin string       // static banger-agent, becomes the initrd's /init
	Logger   *slog.Logger // nil: silent
	Client   *http.Client // nil: http.DefaultClient
	Keyring  string       // OpenPGP keyring InRelease must be signed by; "": DebianKeyring
}

// manifest is manifest.json; paths are relative to the bundle directory.
type manifest struct {
	Name      string    `json:"name"`
	Release   string    `json:"release,omitempty"`
	Source    string    `json:"source"`
	SHA256    string    `json:"sha256,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Kernel    string    `json:"kernel"`
	Initrd    string    `json:"initrd,omitempty"`
	Modules   string    `json:"modules,omitempty"`
}

const manifestFile = "manifest.json"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports an error unless name can name a bundle.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: kernel name %q: use letters, digits, '.', '_' and '-' (at most 64)", ErrInvalid, name)
	}
	return nil
}

// CatalogNames lists the names Pull accepts, sorted.
func CatalogNames() []string {
	names := make([]string, 0, len(Catalog))
	for n := range Catalog {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// List returns every bundle, sorted by name.
func (s *Store) List() ([]Bundle, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing kernels: %w", err)
	}
	var out []Bundle
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := s.Get(e.Name())
		if err != nil {
			s.logger().Warn("skipping unreadable kernel bundle", "name", e.Name(), "err", err)
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// Get returns the bundle called name, or an error wrapping ErrNotExist.
func (s *Store) Get(name string) (Bundle, error) {
	if err := ValidName(name); err != nil {
		return Bundle{}, err
	}
	dir := filepath.Join(s.Dir, name)
	data, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return Bundle{}, fmt.Errorf("%w: %q", ErrNotExist, name)
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("reading kernel %q: %w", name, err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Bundle{}, fmt.Errorf("reading kernel %q manifest: %w", name, err)
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		return filepath.Join(dir, p)
	}
	return Bundle{
		Name: m.Name, Release: m.Release, Source: m.Source, SHA256: m.SHA256,
		CreatedAt: m.CreatedAt,
		Kernel:    abs(m.Kernel), Initrd: abs(m.Initrd), Modules: abs(m.Modules),
	}, nil
}

// Delete removes the bundle called name.
func (s *Store) Delete(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, name)
	// Rename first so a crash never leaves a half-deleted bundle visible.
	tmp, err := os.MkdirTemp(s.Dir, ".del-"+name+"-")
	if err != nil {
		return fmt.Errorf("deleting kernel %q: %w", name, err)
	}
	gone := filepath.Join(tmp, name)
	if err := os.Rename(dir, gone); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("deleting kernel %q: %w", name, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("deleting kernel %q: %w", name, err)
	}
	return nil
}

// staging is a bundle under construction in a temporary directory beside
// the store's bundles. commit renames it into place; discard removes it.
type staging struct {
	store *Store
	name  string
	dir   string
}

// stage starts a bundle; an empty name is chosen later, before commit.
func (s *Store) stage(name string) (*staging, error) {
	if name != "" {
		if err := ValidName(name); err != nil {
			return nil, err
		}
		if _, err := s.Get(name); err == nil {
			return nil, fmt.Errorf("%w: %q (delete it first)", ErrExist, name)
		}
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating kernel store: %w", err)
	}
	s.removeStale()
	dir, err := os.MkdirTemp(s.Dir, ".tmp-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating kernel staging dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating kernel staging dir: %w", err)
	}
	return &staging{store: s, name: name, dir: dir}, nil
}

// RemoveStale removes the builds a daemon killed mid-pull or mid-import
// left, last changed before since, and interrupted deletes. Pass the
// daemon's start time, so work in progress in this process is never
// touched. (stage sweeps only builds older than a day: another process
// may be building.)
func (s *Store) RemoveStale(since time.Time) {
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		stale := strings.HasPrefix(e.Name(), ".del-")
		if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".tmp-") {
			stale = info.ModTime().Before(since)
		}
		if stale {
			s.logger().Info("removing what a killed kernel build left", "dir", e.Name())
			os.RemoveAll(filepath.Join(s.Dir, e.Name()))
		}
	}
}

// removeStale removes what a crash left behind: interrupted deletes, and
// builds that started more than a day ago.
func (s *Store) removeStale() {
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		stale := strings.HasPrefix(e.Name(), ".del-")
		if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".tmp-") {
			stale = time.Since(info.ModTime()) > 24*time.Hour
		}
		if stale {
			s.logger().Info("removing leftover kernel build", "dir", e.Name())
			os.RemoveAll(filepath.Join(s.Dir, e.Name()))
		}
	}
}

func (st *staging) path(file string) string { return filepath.Join(st.dir, file) }

func (st *staging) discard() { os.RemoveAll(st.dir) }

// commit writes the manifest, syncs and renames the bundle into place.
func (st *staging) commit(ctx context.Context, m manifest) (Bundle, error) {
	if err := ctx.Err(); err != nil {
		return Bundle{}, err
	}
	if err := ValidName(st.name); err != nil {
		return Bundle{}, err
	}
	m.Name = st.name
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Bundle{}, err
	}
	if err := writeFileSync(st.path(manifestFile), append(data, '\n')); err != nil {
		return Bundle{}, fmt.Errorf("writing manifest: %w", err)
	}
	if err := syncDir(st.dir); err != nil {
		return Bundle{}, err
	}
	final := filepath.Join(st.store.Dir, st.name)
	crashpoint.Hit(crashpoint.KernelBeforeCommit)
	if err := os.Rename(st.dir, final); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return Bundle{}, fmt.Errorf("%w: %q", ErrExist, st.name)
		}
		return Bundle{}, fmt.Errorf("installing kernel %q: %w", st.name, err)
	}
	if err := syncDir(st.store.Dir); err != nil {
		return Bundle{}, err
	}
	crashpoint.Hit(crashpoint.KernelAfterCommit)
	return st.store.Get(st.name)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

func (s *Store) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Store) client() *http.Client {
	if s.Client == nil {
		return http.DefaultClient
	}
	return s.Client
}

// report tells progress, when there is one, that phase began.
func report(progress Progress, phase string) {
	if progress != nil {
		progress(phase, 0, 0)
	}
}
