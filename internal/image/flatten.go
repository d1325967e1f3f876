package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeEntry is returned for a layer entry that would land outside the
// root: through "..", or through a symlink that points out of it.
var ErrUnsafeEntry = errors.New("layer entry escapes the root")

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	maxSymlinks    = 40
	xattrPAX       = "SCHILY.xattr."
)

// Flattener applies OCI layer tars, lowest first, to a root directory the
// way an overlay mount would show them: whiteouts delete, opaque
// directories hide what lower layers put in them. Ownership, modes
// (setuid/setgid/sticky too), mtimes, hardlinks, symlinks, device nodes,
// fifos and xattrs are kept. Paths are resolved inside the root: symlinks
// are followed as if root were "/", and an entry that would land outside
// the root fails with ErrUnsafeEntry naming it. It must run as root.
type Flattener struct {
	root     string
	dirTimes map[string]time.Time // directory mtimes, set by Finish
	layer    map[string]bool      // paths the current layer wrote (relative)
	dirs     map[string]bool      // known real directories (relative); a cache
}

// NewFlattener returns a Flattener writing into root, which must exist.
func NewFlattener(root string) *Flattener {
	return &Flattener{root: root, dirTimes: map[string]time.Time{}, dirs: map[string]bool{"": true}}
}

// Flatten applies the uncompressed layer tars to root, lowest first.
func Flatten(ctx context.Context, root string, layers ...io.Reader) error {
	f := NewFlattener(root)
	for i, l := range layers {
		if err := f.Apply(ctx, l); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return f.Finish()
}

// Apply applies one uncompressed layer tar on top of what is there.
func (f *Flattener) Apply(ctx context.Context, r io.Reader) error {
	f.layer = map[string]bool{}
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		if err := f.entry(hdr, tr); err != nil {
			return err
		}
	}
}

// Finish sets the directories' mtimes, which adding entries changed.
func (f *Flattener) Finish() error {
	for rel, mt := range f.dirTimes {
		p := filepath.Join(f.root, rel)
		err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("setting mtime of /%s: %w", rel, err)
		}
	}
	return nil
}

func (f *Flattener) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	base := filepath.Base(filepath.Clean("/" + hdr.Name))
	if strings.HasPrefix(base, whiteoutPrefix) {
		return f.whiteout(hdr.Name, base)
	}
	dir, name, err := f.resolveParent(hdr.Name, true)
	if err != nil {
		return err
	}
	if name == "" { // the root itself
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: %q replaces the root with a non-directory", ErrUnsafeEntry, hdr.Name)
		}
		return f.meta(hdr, f.root, "")
	}
	rel := join(dir, name)
	p := filepath.Join(f.root, rel)
	if err := f.replace(p, rel, hdr.Typeflag == tar.TypeDir); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if err := f.create(hdr, p, r); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	for p := rel; p != "" && !f.layer[p]; p = parentOf(p) {
		f.layer[p] = true // and its parents: an opaque marker keeps them
	}
	if hdr.Typeflag == tar.TypeLink {
		return nil // a hardlink shares the target's inode and metadata
	}
	if err := f.meta(hdr, p, rel); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

// replace removes what is at p unless both it and the new entry are
// directories (then the directory is kept and its metadata updated).
func (f *Flattener) replace(p, rel string, newIsDir bool) error {
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() && newIsDir {
		return nil
	}
	if st.IsDir() {
		f.forgetDirs()
	}
	return os.RemoveAll(p)
}

func (f *Flattener) create(hdr *tar.Header, p string, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse: // archive/tar expands sparse files
		w, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		return err
	case tar.TypeSymlink:
		return os.Symlink(hdr.Linkname, p)
	case tar.TypeLink:
		dir, name, err := f.resolveParent(hdr.Linkname, false)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		target := filepath.Join(f.root, dir, name)
		if st, err := os.Lstat(target); err != nil {
			return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		} else if st.IsDir() {
			return fmt.Errorf("hardlink target %q is a directory", hdr.Linkname)
		}
		return unix.Linkat(unix.AT_FDCWD, target, unix.AT_FDCWD, p, 0)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		return unix.Mknod(p, mode|0o600, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	}
	return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
}

// meta applies ownership, mode, xattrs and mtime. chown comes first: it
// clears setuid bits and file capabilities.
func (f *Flattener) meta(hdr *tar.Header, p, rel string) error {
	if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	isLink := hdr.Typeflag == tar.TypeSymlink
	if !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return err
		}
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, xattrPAX)
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && strings.HasPrefix(attr, "security.") {
			return fmt.Errorf("setting xattr %s: %w", attr, err)
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		f.dirTimes[rel] = hdr.ModTime
		f.dirs[rel] = true
		return nil
	}
	ts := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// whiteout handles ".wh.NAME" (delete NAME) and ".wh..wh..opq" (hide
// what lower layers put in the directory).
func (f *Flattener) whiteout(entry, base string) error {
	dir, _, err := f.resolveParent(entry, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == opaqueMarker {
		return f.prune(dir)
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return fmt.Errorf("%w: bad whiteout %q", ErrUnsafeEntry, entry)
	}
	f.forgetDirs()
	if err := os.RemoveAll(filepath.Join(f.root, dir, victim)); err != nil {
		return fmt.Errorf("whiteout %q: %w", entry, err)
	}
	return nil
}

// prune removes from dir what the current layer did not write.
func (f *Flattener) prune(dir string) error {
	ents, err := os.ReadDir(filepath.Join(f.root, dir))
	if err != nil {
		return fmt.Errorf("opaque directory /%s: %w", dir, err)
	}
	for _, e := range ents {
		rel := join(dir, e.Name())
		if !f.layer[rel] {
			f.forgetDirs()
			if err := os.RemoveAll(filepath.Join(f.root, rel)); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() {
			if err := f.prune(rel); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *Flattener) forgetDirs() { f.dirs = map[string]bool{"": true} }

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func parentOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}
