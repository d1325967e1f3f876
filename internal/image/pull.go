package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"banger/internal/crashpoint"
	"banger/internal/diskspace"
)

// PullOptions says what to pull and how.
type PullOptions struct {
	Ref       string // OCI reference
	Name      string // image name (required; DefaultName gives the usual one)
	KernelRef string
	SizeBytes int64 // ext4 size; 0 means content plus headroom
	// CacheDir holds verified layer blobs shared by all pulls
	// (<Dirs.Cache>/oci).
	CacheDir string
	Keychain authn.Keychain // nil means authn.DefaultKeychain (~/.docker/config.json)
	Parallel int            // layers fetched at once; 0 means 4
	Progress Progress
}

// PullOCI makes the image o.Name from the linux/amd64 image of an OCI
// reference: layers are fetched in parallel into the blob cache (digests
// checked), read into a tree, banger's pieces go in, and the root
// filesystem is streamed into ext4. An image of that name is replaced,
// atomically: whether to pull at all is the caller's choice. On any error
// or cancellation nothing is left in the store but the verified blobs in
// the cache.
func (s *Store) PullOCI(ctx context.Context, o PullOptions) (Image, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	ref, err := ParseRef(o.Ref)
	if err != nil {
		return Image{}, err
	}
	if err := ValidName(o.Name); err != nil {
		return Image{}, err
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	progress("resolving "+ref.String(), 0, 0)
	img, digest, err := remoteImage(ctx, ref, kc)
	if err != nil {
		return Image{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return Image{}, fmt.Errorf("reading layers of %s: %w", ref, err)
	}
	cache := BlobCache{Dir: o.CacheDir}
	if err := fetchLayers(ctx, cache, layers, o.Parallel, progress); err != nil {
		return Image{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	srcs, err := blobLayers(cache, layers)
	if err != nil {
		return Image{}, err
	}
	return s.build(ctx, o.Name, func(ctx context.Context, r *rootfs, _ string) ([]layerSource, error) {
		return srcs, r.readLayers(ctx, srcs, progress)
	}, buildInfo{Source: ref.String(), Digest: digest.String(), KernelRef: o.KernelRef, SizeBytes: o.SizeBytes}, progress)
}

func fetchLayers(ctx context.Context, cache BlobCache, layers []v1.Layer, parallel int, progress Progress) error {
	if parallel <= 0 {
		parallel = 4
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		phase := "layer " + h.Hex[:12]
		g.Go(func() error {
			return cache.Fetch(ctx, l, func(done, total int64) { progress(phase, done, total) })
		})
	}
	return g.Wait()
}

// blobLayers are the cached layers as sources for a build.
func blobLayers(cache BlobCache, layers []v1.Layer) ([]layerSource, error) {
	out := make([]layerSource, len(layers))
	for i, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		out[i] = tarLayer{open: func() (io.Reader, func() error, func(), error) {
			rd, verify, closeFn, err := cache.Open(h)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("layer %s: %w", h, err)
			}
			return rd, verify, closeFn, nil
		}}
	}
	return out, nil
}

// buildInfo is what a build knows up front for the manifest.
type buildInfo struct {
	Source, Digest, KernelRef string
	SizeBytes                 int64
}

// fillFunc fills the tree of a build, using stage for scratch space, and
// returns the layers its file contents are read from.
type fillFunc func(ctx context.Context, r *rootfs, stage string) ([]layerSource, error)

// build fills a tree with fill, puts banger's pieces in, makes the ext4
// and commits the image, replacing an existing one. The staging directory
// lives in the store (same filesystem, dot-named so List skips it) and is
// removed whatever happens.
func (s *Store) build(ctx context.Context, name string, fill fillFunc, bi buildInfo, progress Progress) (Image, error) {
	if s.AgentBin == "" {
		return Image{}, fmt.Errorf("banger-agent not found; reinstall banger (sudo make install)")
	}
	im, err := s.buildIn(ctx, name, fill, bi, progress)
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		dir := diskspace.Dir(err, s.Dir)
		err = fmt.Errorf("%w in %s: %s is full: %w", ErrNoSpace, dir, diskspace.Describe(dir), err)
	}
	return im, err
}

func (s *Store) buildIn(ctx context.Context, name string, fill fillFunc, bi buildInfo, progress Progress) (Image, error) {
	stage, err := s.stage(name)
	if err != nil {
		return Image{}, err
	}
	defer removeStage(stage)
	r := newRootfs(s.Limits)
	layers, err := fill(ctx, r, stage)
	if err != nil {
		return Image{}, err
	}
	progress("injecting banger's pieces", 0, 0)
	info, err := r.prepare(ctx, s.AgentBin)
	if err != nil {
		return Image{}, err
	}
	progress("building ext4", 0, 0)
	crashpoint.Hit(crashpoint.ImageBeforeExt4)
	size, err := buildExt4(ctx, r, layers, filepath.Join(stage, rootfsFile), bi.SizeBytes)
	if err != nil {
		return Image{}, err
	}
	crashpoint.Hit(crashpoint.ImageAfterExt4)
	if err := removeTree(filepath.Join(stage, "tree")); err != nil {
		return Image{}, err
	}
	im := Image{
		Name: name, Source: bi.Source, Digest: bi.Digest, SizeBytes: size, KernelRef: bi.KernelRef,
		Distro: info.Distro, HasSSHD: info.HasSSHD, Injected: true, CreatedAt: time.Now().UTC(),
	}
	if err := ctx.Err(); err != nil {
		return Image{}, err
	}
	if err := s.commitReplace(stage, im); err != nil {
		return Image{}, err
	}
	crashpoint.Hit(crashpoint.ImageAfterCommit)
	return s.Get(name)
}

// removeTree removes a host tree a fill made, after unmounting what a
// builder left mounted in it.
func removeTree(tree string) error {
	unmountUnder(tree)
	if mountedUnder(tree) {
		return fmt.Errorf("%s: still mounted after debootstrap; unmount it and pull again", tree)
	}
	return os.RemoveAll(tree)
}

// commitReplace commits stage as im, replacing an image of that name.
// The two directories are swapped in one step (renameat2 with
// RENAME_EXCHANGE), so a crash leaves either image in place, never
// neither; the old one is then in the staging directory, which is
// removed now or, after a crash, by RemoveStale.
func (s *Store) commitReplace(stage string, im Image) error {
	dir := filepath.Join(s.Dir, im.Name)
	if _, err := os.Lstat(dir); err != nil {
		return s.commit(stage, im)
	}
	if err := s.writeManifest(stage, im); err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.ImageBeforeCommit)
	err := unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return s.replaceByTrash(stage, dir, im)
	}
	if err != nil {
		return err
	}
	return syncDir(s.Dir)
}

// replaceByTrash replaces where the filesystem cannot swap: the old image
// is moved to a trash directory first, which RemoveStale puts back if a
// crash comes before the new one is in place.
func (s *Store) replaceByTrash(stage, dir string, im Image) error {
	trash := filepath.Join(s.Dir, ".trash-"+im.Name+"-"+randHex())
	if err := os.Rename(dir, trash); err != nil {
		return err
	}
	if err := os.Rename(stage, dir); err != nil {
		os.Rename(trash, dir)
		return err
	}
	os.RemoveAll(trash)
	return syncDir(s.Dir)
}

// removeStage removes a staging directory, after unmounting anything a
// builder left mounted in it; if something stays mounted it is left alone
// rather than deleting through the mount.
func removeStage(stage string) {
	unmountUnder(stage)
	if mountedUnder(stage) {
		return
	}
	os.RemoveAll(stage)
}

// RemoveStale removes staging directories in the store, and partial
// blobs in the blob cache dir, last changed before since: what a daemon
// killed mid-pull left behind. A trash directory whose image is missing
// (a crash mid-replace) is put back; others are removed. Pass the
// daemon's start time, so work in progress in this process is never
// touched.
func (s *Store) RemoveStale(since time.Time, cacheDir string) {
	trash, _ := filepath.Glob(filepath.Join(s.Dir, ".trash-*"))
	for _, p := range trash {
		base := strings.TrimPrefix(filepath.Base(p), ".trash-")
		name := base[:max(0, strings.LastIndexByte(base, '-'))]
		if ValidName(name) != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.Dir, name)); errors.Is(err, fs.ErrNotExist) {
			os.Rename(p, filepath.Join(s.Dir, name))
		}
	}
	for _, g := range []string{filepath.Join(s.Dir, ".tmp-*"), filepath.Join(s.Dir, ".trash-*"), filepath.Join(cacheDir, "sha256", ".tmp-*")} {
		m, _ := filepath.Glob(g)
		for _, p := range m {
			if st, err := os.Lstat(p); err == nil && st.ModTime().Before(since) {
				removeStage(p)
			}
		}
	}
}
