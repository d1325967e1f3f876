package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// PullOptions says what to pull and how.
type PullOptions struct {
	Ref       string // OCI reference
	Name      string // image name; "" derives one from Ref
	KernelRef string
	SizeBytes int64 // ext4 size; 0 means content plus headroom
	Refresh   bool  // rebuild even when the image exists
	// CacheDir holds verified layer blobs shared by all pulls
	// (<Dirs.Cache>/oci).
	CacheDir string
	Keychain authn.Keychain // nil means authn.DefaultKeychain (~/.docker/config.json)
	Parallel int            // layers fetched at once; 0 means 4
	Progress Progress
}

// PullOCI makes an image from the linux/amd64 image of an OCI reference:
// layers are fetched in parallel into the blob cache (digests checked),
// flattened into a staging tree, banger's pieces go in, and mkfs.ext4
// builds the root filesystem. An existing image is returned as is unless
// Refresh is set. On any error or cancellation nothing is left in the
// store but the verified blobs in the cache.
func (s *Store) PullOCI(ctx context.Context, o PullOptions) (Image, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	ref, err := ParseRef(o.Ref)
	if err != nil {
		return Image{}, err
	}
	if o.Name == "" {
		o.Name = DefaultName(ref)
	}
	if err := ValidName(o.Name); err != nil {
		return Image{}, err
	}
	if im, err := s.Get(o.Name); err == nil && !o.Refresh {
		return im, nil
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
	return s.build(ctx, o.Name, func(ctx context.Context, tree string) error {
		return unpackLayers(ctx, cache, layers, tree, progress)
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

func unpackLayers(ctx context.Context, cache BlobCache, layers []v1.Layer, tree string, progress Progress) error {
	f := NewFlattener(tree)
	for i, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		progress("unpacking layers", int64(i), int64(len(layers)))
		tr, verify, closeFn, err := cache.Open(h)
		if err != nil {
			return err
		}
		err = f.Apply(ctx, tr)
		if err == nil {
			err = verify()
		}
		closeFn()
		if err != nil {
			return fmt.Errorf("layer %s: %w", h, err)
		}
	}
	progress("unpacking layers", int64(len(layers)), int64(len(layers)))
	return f.Finish()
}

// buildInfo is what a build knows up front for the manifest.
type buildInfo struct {
	Source, Digest, KernelRef string
	SizeBytes                 int64
}

// build fills a staging tree with fill, puts banger's pieces in, makes
// the ext4 and commits the image, replacing an existing one. The staging
// directory lives in the store (same filesystem, dot-named so List skips
// it) and is removed whatever happens.
func (s *Store) build(ctx context.Context, name string, fill func(ctx context.Context, tree string) error, bi buildInfo, progress Progress) (Image, error) {
	if s.AgentBin == "" {
		return Image{}, fmt.Errorf("banger-agent not found; reinstall banger (sudo make install)")
	}
	im, err := s.buildIn(ctx, name, fill, bi, progress)
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		err = fmt.Errorf("%w in %s: %v", ErrNoSpace, s.Dir, err)
	}
	return im, err
}

func (s *Store) buildIn(ctx context.Context, name string, fill func(ctx context.Context, tree string) error, bi buildInfo, progress Progress) (Image, error) {
	stage, err := s.stage(name)
	if err != nil {
		return Image{}, err
	}
	defer removeStage(stage)
	tree := filepath.Join(stage, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return Image{}, err
	}
	if err := fill(ctx, tree); err != nil {
		return Image{}, err
	}
	progress("injecting banger's pieces", 0, 0)
	info, err := PrepareTree(tree, s.AgentBin)
	if err != nil {
		return Image{}, err
	}
	progress("building ext4", 0, 0)
	size, err := BuildExt4(ctx, tree, filepath.Join(stage, rootfsFile), bi.SizeBytes)
	if err != nil {
		return Image{}, err
	}
	if err := os.RemoveAll(tree); err != nil {
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
	return s.Get(name)
}

// commitReplace commits stage as im, replacing an image of that name.
func (s *Store) commitReplace(stage string, im Image) error {
	dir := filepath.Join(s.Dir, im.Name)
	if _, err := os.Stat(dir); err == nil {
		trash := filepath.Join(s.Dir, ".trash-"+im.Name+"-"+randHex())
		if err := os.Rename(dir, trash); err != nil {
			return err
		}
		defer os.RemoveAll(trash)
	}
	return s.commit(stage, im)
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

// RemoveStale removes staging and trash directories in the store, and
// partial blobs in the blob cache dir, last changed before since: what a
// daemon killed mid-pull left behind. Pass the daemon's start time, so
// work in progress in this process is never touched.
func (s *Store) RemoveStale(since time.Time, cacheDir string) {
	for _, g := range []string{filepath.Join(s.Dir, ".tmp-*"), filepath.Join(s.Dir, ".trash-*"), filepath.Join(cacheDir, "sha256", ".tmp-*")} {
		m, _ := filepath.Glob(g)
		for _, p := range m {
			if st, err := os.Lstat(p); err == nil && st.ModTime().Before(since) {
				removeStage(p)
			}
		}
	}
}
