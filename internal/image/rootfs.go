package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"
)

// ErrUnsafeEntry is returned for a layer entry that would land outside the
// root: through "..", or through a symlink that points out of it.
var ErrUnsafeEntry = errors.New("layer entry escapes the root")

// ErrTooBig is returned when an image holds more than the pull limits
// allow (bytes of file data, or entries).
var ErrTooBig = errors.New("image exceeds the pull limits")

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	maxSymlinks    = 40
	xattrPAX       = "SCHILY.xattr."
	// captureMax is how much of a file banger reads to decide how to
	// prepare an image (os-release, inittab, sshd_config).
	captureMax = 64 << 10
)

// Limits bound what one image build may hold. Zero fields mean the
// defaults.
type Limits struct {
	Bytes   int64 // file data, summed over every layer entry
	Entries int64 // layer entries (files, directories, links, whiteouts)
}

// DefaultLimits are the limits of a pull when config sets none.
var DefaultLimits = Limits{Bytes: 32 << 30, Entries: 4 << 20}

func (l Limits) orDefault() Limits {
	if l.Bytes <= 0 {
		l.Bytes = DefaultLimits.Bytes
	}
	if l.Entries <= 0 {
		l.Entries = DefaultLimits.Entries
	}
	return l
}

// captured are the files whose first bytes are kept while layers are read,
// by their real path in the image.
var captured = map[string]bool{
	"etc/os-release": true, "usr/lib/os-release": true, "etc/inittab": true, "etc/ssh/sshd_config": true,
}

// rootfs is an image's root filesystem held in memory while the image is
// built: what the layers leave after whiteouts, with banger's pieces
// added. Only metadata lives here; file contents stay in the layers (or
// in banger's own files) and are streamed into the ext4 image by emit.
// Nothing here touches the host's filesystem, so an image's symlinks,
// device nodes and fifos are only ever data: they are never followed,
// opened or created on the host.
type rootfs struct {
	root    *node
	limits  Limits
	bytes   int64     // file data seen, against limits.Bytes
	entries int64     // entries seen, against limits.Entries
	layer   int       // the layer being applied, from 1
	mtime   time.Time // of directories an entry implies, the entry's
	layers  []layerSource
	pad     int // spare inodes to reserve in the ext4 image
}

// node is one name in the tree. Hardlinked regular files share file.
type node struct {
	hdr      tar.Header // Typeflag, Mode, Uid, Gid, ModTime, Linkname, Devmajor/minor, xattr PAXRecords
	children map[string]*node
	file     *fileData
	touched  int // the last layer that wrote this node or something below it
}

// fileData says where a regular file's content is.
type fileData struct {
	size     int64
	layer    int    // the layer holding it (from 1), 0 when it is body or hostPath
	entry    int    // its index among the layer's entries
	body     []byte // content banger wrote, or the captured first bytes of a layer file
	hostPath string // banger's own file on the host (the agent binary)
	paths    []string
}

func newRootfs(l Limits) *rootfs {
	return &rootfs{root: dirNode(tar.Header{Mode: 0o755}), limits: l.orDefault()}
}

func dirNode(h tar.Header) *node {
	h.Typeflag = tar.TypeDir
	return &node{hdr: h, children: map[string]*node{}}
}

func (n *node) isDir() bool { return n.hdr.Typeflag == tar.TypeDir }

// resolved is a directory found by resolveParent: the node and its real
// path from the root ("" is the root).
type resolved struct {
	dir  *node
	path string
}

// resolveParent resolves every component of entry but the last inside
// the tree, following symlinks as if the tree were "/". Missing
// directories are made (0755, root-owned) when create is set, else it
// fails with fs.ErrNotExist. The nodes it passes are marked as touched by
// the current layer when mark is set. A path that would leave the root,
// by ".." or through a symlink, fails with ErrUnsafeEntry.
func (r *rootfs) resolveParent(entry string, create, mark bool) (resolved, string, error) {
	comps, err := splitEntry(entry)
	if err != nil {
		return resolved{}, "", err
	}
	if len(comps) == 0 {
		return resolved{r.root, ""}, "", nil
	}
	name := comps[len(comps)-1]
	stack := []*node{r.root}
	var names []string
	queue := comps[:len(comps)-1]
	links := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(names) == 0 {
				return resolved{}, "", fmt.Errorf("%w: %q goes above the root", ErrUnsafeEntry, entry)
			}
			stack, names = stack[:len(stack)-1], names[:len(names)-1]
			continue
		}
		cur := stack[len(stack)-1]
		child := cur.children[c]
		switch {
		case child == nil && create:
			child = dirNode(tar.Header{Mode: 0o755, ModTime: r.mtime})
			cur.children[c] = child
		case child == nil:
			return resolved{}, "", fmt.Errorf("entry %q: /%s: %w", entry, join(strings.Join(names, "/"), c), fs.ErrNotExist)
		case child.hdr.Typeflag == tar.TypeSymlink:
			if links++; links > maxSymlinks {
				return resolved{}, "", fmt.Errorf("entry %q: too many levels of symlinks", entry)
			}
			target := child.hdr.Linkname
			if strings.HasPrefix(target, "/") {
				stack, names = stack[:1], nil
			}
			if escapes(len(names), target) {
				return resolved{}, "", fmt.Errorf("%w: %q goes through symlink /%s -> %s, out of the root",
					ErrUnsafeEntry, entry, join(strings.Join(names, "/"), c), target)
			}
			queue = append(strings.Split(target, "/"), queue...)
			continue
		case !child.isDir():
			return resolved{}, "", fmt.Errorf("entry %q: /%s is not a directory", entry, join(strings.Join(names, "/"), c))
		}
		stack, names = append(stack, child), append(names, c)
	}
	if mark {
		for _, n := range stack {
			n.touched = r.layer
		}
	}
	return resolved{stack[len(stack)-1], strings.Join(names, "/")}, name, nil
}

// lookup finds the node at rel. The last component is followed through
// symlinks when follow is set. It returns the node and its real path.
func (r *rootfs) lookup(rel string, follow bool) (*node, string, error) {
	for range maxSymlinks {
		parent, name, err := r.resolveParent(rel, false, false)
		if err != nil {
			return nil, "", err
		}
		if name == "" {
			return r.root, "", nil
		}
		n := parent.dir.children[name]
		if n == nil {
			return nil, "", fmt.Errorf("/%s: %w", join(parent.path, name), fs.ErrNotExist)
		}
		if !follow || n.hdr.Typeflag != tar.TypeSymlink {
			return n, join(parent.path, name), nil
		}
		target := n.hdr.Linkname
		if !strings.HasPrefix(target, "/") {
			if escapes(strings.Count(parent.path, "/")+boolInt(parent.path != ""), target) {
				return nil, "", fmt.Errorf("%w: /%s -> %s", ErrUnsafeEntry, join(parent.path, name), target)
			}
			target = join(parent.path, target)
		}
		rel = target
	}
	return nil, "", fmt.Errorf("/%s: too many levels of symlinks", rel)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// apply adds one layer entry to the tree, with the layer's rules:
// whiteouts delete, opaque markers hide what lower layers put in a
// directory, a new entry replaces what was at its path unless both are
// directories. body is read only for the files banger looks into, and
// only their first captureMax bytes.
func (r *rootfs) apply(hdr *tar.Header, body io.Reader, entry int) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if r.entries++; r.entries > r.limits.Entries {
		return fmt.Errorf("%w: more than %d entries (raise image_max_entries in config.toml if the image is real)", ErrTooBig, r.limits.Entries)
	}
	if isRegular(hdr.Typeflag) {
		if hdr.Size < 0 {
			return fmt.Errorf("entry %q: negative size", hdr.Name)
		}
		if r.bytes += hdr.Size; r.bytes > r.limits.Bytes {
			return fmt.Errorf("%w: more than %s of file data at %q (raise image_max_bytes in config.toml if the image is real)",
				ErrTooBig, human(r.limits.Bytes), hdr.Name)
		}
	}
	base := ""
	if comps, _ := splitEntry(hdr.Name); len(comps) > 0 {
		base = comps[len(comps)-1]
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return r.whiteout(hdr.Name, base)
	}
	r.mtime = hdr.ModTime
	parent, name, err := r.resolveParent(hdr.Name, true, true)
	if err != nil {
		return err
	}
	if name == "" { // the root itself
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: %q replaces the root with a non-directory", ErrUnsafeEntry, hdr.Name)
		}
		r.root.hdr = meta(hdr)
		return nil
	}
	n, err := r.newNode(hdr, body, join(parent.path, name), entry)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if old := parent.dir.children[name]; old != nil && old.isDir() && n.isDir() {
		old.hdr, old.touched = n.hdr, r.layer
		return nil
	}
	n.touched = r.layer
	parent.dir.children[name] = n
	return nil
}

func isRegular(typ byte) bool {
	switch typ {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse: // archive/tar expands sparse files
		return true
	}
	return false
}

// meta is the part of a layer header the tree keeps.
func meta(hdr *tar.Header) tar.Header {
	h := tar.Header{
		Typeflag: hdr.Typeflag, Mode: hdr.Mode & 0o7777, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime,
		Linkname: hdr.Linkname, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor,
	}
	if h.Typeflag == tar.TypeSymlink {
		h.Mode = 0o777 // what Linux gives every symlink
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPAX) {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[k] = v
		}
	}
	return h
}

func (r *rootfs) newNode(hdr *tar.Header, body io.Reader, real string, entry int) (*node, error) {
	switch {
	case hdr.Typeflag == tar.TypeDir:
		return &node{hdr: meta(hdr), children: map[string]*node{}}, nil
	case isRegular(hdr.Typeflag):
		h := meta(hdr)
		h.Typeflag = tar.TypeReg
		f := &fileData{size: hdr.Size, layer: r.layer, entry: entry}
		if captured[real] && body != nil {
			b, err := io.ReadAll(io.LimitReader(body, captureMax+1))
			if err != nil {
				return nil, err
			}
			f.body = b
		}
		return &node{hdr: h, file: f}, nil
	case hdr.Typeflag == tar.TypeSymlink, hdr.Typeflag == tar.TypeChar, hdr.Typeflag == tar.TypeBlock, hdr.Typeflag == tar.TypeFifo:
		return &node{hdr: meta(hdr)}, nil
	case hdr.Typeflag == tar.TypeLink:
		target, _, err := r.lookup(hdr.Linkname, false)
		if err != nil {
			return nil, fmt.Errorf("hardlink target: %w", err)
		}
		if target.isDir() {
			return nil, fmt.Errorf("hardlink target %q is a directory", hdr.Linkname)
		}
		n := *target // a hardlink shares the target's inode and metadata
		return &n, nil
	}
	return nil, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
}

// whiteout handles ".wh.NAME" (delete NAME) and ".wh..wh..opq" (hide
// what lower layers put in the directory).
func (r *rootfs) whiteout(entry, base string) error {
	parent, _, err := r.resolveParent(entry, false, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == opaqueMarker {
		r.prune(parent.dir)
		return nil
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return fmt.Errorf("%w: bad whiteout %q", ErrUnsafeEntry, entry)
	}
	delete(parent.dir.children, victim)
	return nil
}

// prune removes from dir what the current layer did not write.
func (r *rootfs) prune(dir *node) {
	for name, c := range dir.children {
		switch {
		case c.touched != r.layer:
			delete(dir.children, name)
		case c.isDir():
			r.prune(c)
		}
	}
}

// escapes reports whether the relative target, read from a directory
// depth levels below the root, climbs above the root.
func escapes(depth int, target string) bool {
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// splitEntry splits a layer path into components, refusing ".." that
// climbs above the root. "./a/b/", "/a/b" and "a/b" are the same path.
func splitEntry(entry string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(entry, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: %q goes above the root", ErrUnsafeEntry, entry)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// walk calls fn for every node below the root, parents before children,
// names in order.
func (r *rootfs) walk(fn func(rel string, n *node) error) error {
	var rec func(dir string, n *node) error
	rec = func(dir string, n *node) error {
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			c := n.children[name]
			rel := join(dir, name)
			if err := fn(rel, c); err != nil {
				return err
			}
			if c.isDir() {
				if err := rec(rel, c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return rec("", r.root)
}

// usage is what the tree holds, to size the ext4 image.
func (r *rootfs) usage() usage {
	u := usage{bytes: 4096, inodes: 1}
	seen := map[*fileData]bool{}
	r.walk(func(_ string, n *node) error {
		switch {
		case n.file != nil && seen[n.file]:
			return nil // another name of a counted file
		case n.file != nil:
			seen[n.file] = true
			u.bytes += (n.file.size + 4095) &^ 4095
		case n.isDir():
			u.bytes += 4096
		case n.hdr.Typeflag == tar.TypeSymlink && len(n.hdr.Linkname) > 59:
			u.bytes += 4096
		}
		u.inodes++
		return nil
	})
	return u
}

// usage is what a root filesystem tree holds.
type usage struct {
	bytes  int64 // file data rounded up to 4 KiB blocks, plus directories
	inodes int64
}

// now is the mtime of what banger adds to an image.
var now = func() time.Time { return time.Now().UTC().Truncate(time.Second) }
