package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"banger/internal/disk"
	"banger/internal/ext4"
	"banger/internal/image"
	"banger/internal/vmm"
)

// layerStore keeps the disks of VMs whose VMM takes qcow2 (QEMU), in one
// directory (<state>/layers), so that a disk can outlive the VM that
// wrote it (a snapshot's frozen layer):
//
//   - <id>.qcow2: a layer, named by vms.layer (a VM's active disk) or
//     snapshots.layer (a frozen one); its header names its backing file.
//   - base/<image>@<stamp>.raw: the bottom of a chain, a hard link to an
//     image's rootfs. Images are never changed in place, and the link
//     keeps what a layer reads when the image is replaced (pull
//     --refresh) or deleted. Where no link can be made it is a copy.
//   - base/<image>@<stamp>-<size>.raw: for images whose filesystem the
//     guest cannot grow online (sparse_super2, from tar2ext4): a copy
//     grown to size by resize2fs, made once per (image, size).
//
// A file nothing refers to (no row's layer, and not in the backing chain
// of one) is garbage: gc removes it.
type layerStore struct {
	dir string
	log *slog.Logger

	// mu is held from the moment a base is put in place until the layer
	// over it exists, and by gc: gc never sees a base whose layer is not
	// made yet.
	mu sync.Mutex
	// builds serializes the building of one grown base (by its name), so
	// two creates of one image and size copy it once.
	builds keyedMutex
}

// tmpPrefix starts files being made; only a start-up gc removes them.
const tmpPrefix = ".tmp-"

func newLayerName() string { return newID() + ".qcow2" }

// path is the file of the layer called name.
func (l *layerStore) path(name string) string { return filepath.Join(l.dir, name) }

func (l *layerStore) baseDir() string { return filepath.Join(l.dir, "base") }

// overImage makes layer (a file name in the store) a qcow2 layer of size
// bytes over a base of im: the image's own file when the guest grows its
// filesystem online (or it needs no growing), else a copy of it grown to
// size, made once and kept for the next VM of that image and size while
// the image is there. On error no layer is left.
func (l *layerStore) overImage(ctx context.Context, im image.Image, layer string, size int64, p progressFunc) error {
	if err := os.MkdirAll(l.baseDir(), 0o700); err != nil {
		return err
	}
	size = max(size, im.SizeBytes)
	if size > im.SizeBytes {
		sb, err := ext4.ReadSuperFile(im.Rootfs)
		if err != nil {
			return fmt.Errorf("image %q: %w", im.Name, err)
		}
		if why := sb.OnlineGrowable(); why != nil {
			l.log.Info("image cannot grow online; using a base grown on the host", "image", im.Name, "why", why, "bytes", size)
			return l.overGrown(ctx, im, layer, size, p)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	base, err := l.linkBase(ctx, im, p)
	if err != nil {
		return err
	}
	return disk.CreateOverlay(ctx, base, vmm.FormatRaw, l.path(layer), size)
}

// overGrown makes layer over the base of im grown to size, building the
// base when it is missing: a copy of the rootfs (reflink where it can)
// that resize2fs grows, under a temporary name until it is whole. The
// build runs outside l.mu (it takes seconds); the base is looked for,
// renamed into place and built on under it.
func (l *layerStore) overGrown(ctx context.Context, im image.Image, layer string, size int64, p progressFunc) error {
	name := baseName(im) + "-" + strconv.FormatInt(size, 10) + ".raw"
	base := filepath.Join(l.baseDir(), name)
	defer l.builds.lock(name)()
	tmp := ""
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	for {
		l.mu.Lock()
		_, err := os.Lstat(base)
		if err != nil && tmp != "" {
			err = os.Rename(tmp, base)
			tmp = ""
		}
		if err == nil {
			err = disk.CreateOverlay(ctx, base, vmm.FormatRaw, l.path(layer), size)
			l.mu.Unlock()
			return err
		}
		l.mu.Unlock()
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("grown base of image %q: %w", im.Name, err)
		}
		if tmp, err = l.buildGrown(ctx, im, name, size, p); err != nil {
			return err
		}
	}
}

// buildGrown copies im's rootfs to a temporary file in the base
// directory and grows it to size there; it returns the file.
func (l *layerStore) buildGrown(ctx context.Context, im image.Image, name string, size int64, p progressFunc) (string, error) {
	tmp := filepath.Join(l.baseDir(), tmpPrefix+name+"-"+newID())
	if _, err := disk.Clone(ctx, im.Rootfs, tmp, func(d, t int64) { p("copying rootfs", d, t) }); err != nil {
		return "", err
	}
	p("growing filesystem", 0, 0)
	if _, err := disk.Grow(ctx, tmp, size); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// over makes layer a qcow2 layer of size bytes over the layer below (a
// frozen one, in the store).
func (l *layerStore) over(ctx context.Context, below, layer string, size int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := os.Stat(l.path(below)); err != nil {
		return fmt.Errorf("layer %s: %w", below, err)
	}
	return disk.CreateOverlay(ctx, l.path(below), vmm.FormatQCOW2, l.path(layer), size)
}

// baseName is the base file of image im: its name and when it was made,
// which tells a replaced image from the one before.
func baseName(im image.Image) string {
	return im.Name + "@" + strconv.FormatInt(im.CreatedAt.UnixNano(), 10)
}

// linkBase returns the base of im, putting it in place when missing: a
// hard link to its rootfs, else (another filesystem, say) a copy. The
// caller holds l.mu.
func (l *layerStore) linkBase(ctx context.Context, im image.Image, p progressFunc) (string, error) {
	base := filepath.Join(l.baseDir(), baseName(im)+".raw")
	if _, err := os.Lstat(base); err == nil {
		return base, nil
	}
	err := os.Link(im.Rootfs, base)
	if err == nil {
		return base, nil
	}
	l.log.Info("cannot hard-link the image into the layer store; copying it once", "image", im.Name, "err", err)
	tmp := filepath.Join(l.baseDir(), tmpPrefix+baseName(im)+"-"+newID())
	if _, err := disk.Clone(ctx, im.Rootfs, tmp, func(d, t int64) { p("copying rootfs", d, t) }); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, base); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return base, nil
}

// maxChain bounds how deep gc follows backing files (a loop in corrupt
// headers must not hang it).
const maxChain = 64

// gc removes the layers no row names (inUse: VMs' and snapshots'
// layers) and that no layer in use builds on, and the bases no layer in
// use builds on whose image is gone or replaced (images: those in the
// store; a base of a live image costs nothing as a link and is kept as a
// cache when grown). When startup, files being made (tmpPrefix) go too:
// nothing is making them any more. A layer whose header cannot be read
// keeps every base, as gc cannot tell which it needs.
func (l *layerStore) gc(inUse []string, images []image.Image, startup bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := map[string]bool{}
	chainsKnown := true
	for _, name := range inUse {
		p := l.path(name)
		for range maxChain {
			if keep[p] {
				break
			}
			keep[p] = true
			b, _, err := disk.Backing(p)
			if errors.Is(err, fs.ErrNotExist) {
				break // a layer not made yet, or lost
			}
			if err != nil {
				l.log.Warn("cannot read a layer's backing file; keeping every base", "layer", p, "err", err)
				chainsKnown = false
				break
			}
			if b == "" || !strings.HasPrefix(b, l.dir+"/") {
				break
			}
			p = b
		}
	}
	l.sweep(l.dir, keep, nil, startup)
	if chainsKnown {
		live := map[string]bool{}
		for _, im := range images {
			live[baseName(im)] = true
		}
		l.sweep(l.baseDir(), keep, live, startup)
	}
}

// baseImage is the baseName part of a base file's name: up to the end of
// the stamp's digits after the '@'.
func baseImage(file string) string {
	at := strings.IndexByte(file, '@')
	if at < 0 {
		return ""
	}
	end := at + 1
	for end < len(file) && file[end] >= '0' && file[end] <= '9' {
		end++
	}
	return file[:end]
}

// sweep removes the files of dir not in keep. live is nil for the layer
// directory (only *.qcow2 files are looked at there), else the bases of
// the images there are, which are kept too.
func (l *layerStore) sweep(dir string, keep, live map[string]bool, startup bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		switch {
		case e.IsDir() || keep[p]:
			continue
		case strings.HasPrefix(name, tmpPrefix):
			if !startup {
				continue
			}
		case live == nil && !strings.HasSuffix(name, ".qcow2"):
			continue
		case live != nil && live[baseImage(name)]:
			continue
		}
		if err := os.Remove(p); err != nil {
			l.log.Warn("removing unused layer file", "file", p, "err", err)
			continue
		}
		l.log.Info("removed unused layer file", "file", p)
	}
}

// chain is the files of the layer called name and those below it in the
// store, top first.
func (l *layerStore) chain(name string) ([]string, error) {
	var out []string
	p := l.path(name)
	for range maxChain {
		out = append(out, p)
		b, _, err := disk.Backing(p)
		if err != nil {
			return out, err
		}
		if b == "" || !strings.HasPrefix(b, l.dir+"/") {
			return out, nil
		}
		p = b
	}
	return out, fmt.Errorf("layer %s: backing chain deeper than %d", name, maxChain)
}
