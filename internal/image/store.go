// Package image keeps banger's images: an ext4 root filesystem plus a
// manifest, one directory each under the store. It adopts existing root
// filesystems and puts banger's pieces (the guest agent and its service)
// into them.
package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/crashpoint"
	"banger/internal/disk"
)

// Sentinel errors.
var (
	ErrNotExist = errors.New("does not exist")
	ErrExist    = errors.New("image already exists")
	ErrInvalid  = errors.New("invalid image")
)

// Image is an image's manifest.
type Image struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Digest    string    `json:"digest,omitempty"`
	Rootfs    string    `json:"rootfs"` // absolute, filled in on load
	SizeBytes int64     `json:"size_bytes"`
	KernelRef string    `json:"kernel_ref"`
	Distro    string    `json:"distro,omitempty"`
	HasSSHD   bool      `json:"has_sshd"`
	Injected  bool      `json:"injected"` // banger's agent was put in
	CreatedAt time.Time `json:"created_at"`
}

const (
	manifestFile = "manifest.json"
	rootfsFile   = "rootfs.ext4"
)

// Store keeps images under Dir.
type Store struct {
	Dir      string
	AgentBin string // static banger-agent injected into images
	Limits   Limits // what one image build may hold; zero means DefaultLimits
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports an error unless name can name an image.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: use lowercase letters, digits, '.', '_' and '-' (at most 63)", ErrInvalid, name)
	}
	return nil
}

// Get returns the image called name.
func (s *Store) Get(name string) (Image, error) {
	if ValidName(name) != nil {
		return Image{}, s.notExist(name)
	}
	dir := filepath.Join(s.Dir, name)
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, s.notExist(name)
	}
	if err != nil {
		return Image{}, err
	}
	var im Image
	if err := json.Unmarshal(b, &im); err != nil {
		return Image{}, fmt.Errorf("image %q: corrupt manifest: %w", name, err)
	}
	im.Rootfs = filepath.Join(dir, rootfsFile)
	return im, nil
}

// notExist is the error for a missing image: it names those there are.
func (s *Store) notExist(name string) error {
	list := "none yet"
	if names := s.Names(); len(names) > 0 {
		list = strings.Join(names, ", ")
	}
	return fmt.Errorf("image %q %w (images: %s)", name, ErrNotExist, list)
}

// List returns all images by name.
func (s *Store) List() ([]Image, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if im, err := s.Get(e.Name()); err == nil {
			out = append(out, im)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Names lists image names, for error messages.
func (s *Store) Names() []string {
	ims, _ := s.List()
	names := make([]string, 0, len(ims))
	for _, im := range ims {
		names = append(names, im.Name)
	}
	return names
}

// Delete removes the image. The caller checks that no VM uses it.
func (s *Store) Delete(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, name)
	trash := filepath.Join(s.Dir, ".trash-"+name+"-"+randHex())
	if err := os.Rename(dir, trash); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

// Progress reports how far a long operation got: its phase and, when
// known, how much of the total is done (total 0: unknown). It is the same
// type as kernel.Progress, so one callback serves both stores.
type Progress = func(phase string, done, total int64)

// Register adopts the ext4 root filesystem at rootfs as image name. The
// file is copied into the store and never changed; banger's agent and its
// service are put into the copy. The image boots kernelRef.
func (s *Store) Register(ctx context.Context, name, rootfs, kernelRef string, progress Progress) (Image, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	if err := ValidName(name); err != nil {
		return Image{}, err
	}
	if !filepath.IsAbs(rootfs) {
		return Image{}, fmt.Errorf("%w: --rootfs %q must be an absolute path", ErrInvalid, rootfs)
	}
	if err := disk.IsExt4(rootfs); err != nil {
		return Image{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := s.Get(name); err == nil {
		return Image{}, fmt.Errorf("%q: %w (delete it first: banger image delete %s)", name, ErrExist, name)
	}
	stage, err := s.stage(name)
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(stage) // a no-op once renamed into place

	img := filepath.Join(stage, rootfsFile)
	if _, err := disk.Clone(ctx, rootfs, img, func(d, t int64) { progress("copying rootfs", d, t) }); err != nil {
		return Image{}, err
	}
	progress("injecting agent", 0, 0)
	if err := s.inject(ctx, img); err != nil {
		return Image{}, err
	}
	st, err := os.Stat(img)
	if err != nil {
		return Image{}, err
	}
	im := Image{
		Name: name, Source: "file://" + rootfs, SizeBytes: st.Size(), KernelRef: kernelRef,
		Distro: detectDistro(ctx, img), HasSSHD: disk.Exists(ctx, img, "/usr/sbin/sshd"),
		Injected: true, CreatedAt: time.Now().UTC(),
	}
	if err := s.commit(stage, im); err != nil {
		return Image{}, err
	}
	return s.Get(name)
}

func (s *Store) stage(name string) (string, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(s.Dir, ".tmp-"+name+"-")
}

// commit writes the manifest and renames the staging directory into
// place, with what it holds on disk first.
func (s *Store) commit(stage string, im Image) error {
	if err := s.writeManifest(stage, im); err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.ImageBeforeCommit)
	if err := os.Rename(stage, filepath.Join(s.Dir, im.Name)); err != nil {
		return fmt.Errorf("%q: %w", im.Name, ErrExist)
	}
	return syncDir(s.Dir)
}

// writeManifest writes im's manifest into stage and syncs the stage's
// files, so a power loss after the rename cannot leave a committed image
// with a torn disk or manifest.
func (s *Store) writeManifest(stage string, im Image) error {
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, manifestFile), b, 0o644); err != nil {
		return err
	}
	for _, name := range []string{rootfsFile, manifestFile} {
		if err := syncFile(filepath.Join(stage, name)); err != nil {
			return err
		}
	}
	return syncDir(stage)
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// inject puts banger's pieces into the ext4 image img.
func (s *Store) inject(ctx context.Context, img string) error {
	if s.AgentBin == "" {
		return errors.New("banger-agent not found; reinstall banger (sudo make install)")
	}
	tree, err := os.MkdirTemp("", "banger-inject-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	hasSystemd := disk.Exists(ctx, img, "/lib/systemd/systemd") || disk.Exists(ctx, img, "/usr/lib/systemd/systemd")
	if err := WriteAgentFiles(tree, s.AgentBin, hasSystemd); err != nil {
		return fmt.Errorf("injecting agent: %w", err)
	}
	return disk.CopyIn(ctx, img, tree)
}

func detectDistro(ctx context.Context, img string) string {
	b, err := disk.ReadFile(ctx, img, "/etc/os-release")
	if err != nil {
		b, err = disk.ReadFile(ctx, img, "/usr/lib/os-release")
		if err != nil {
			return ""
		}
	}
	return parseOSRelease(b)
}

// parseOSRelease names the distro in an os-release file: ID-VERSION_CODENAME,
// else ID-VERSION_ID; "" when it has no ID.
func parseOSRelease(b []byte) string {
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok {
			fields[k] = strings.Trim(v, `"'`)
		}
	}
	if fields["ID"] == "" {
		return ""
	}
	if v := fields["VERSION_CODENAME"]; v != "" {
		return fields["ID"] + "-" + v
	}
	return strings.TrimSpace(fields["ID"] + "-" + fields["VERSION_ID"])
}

func randHex() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
