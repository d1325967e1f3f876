package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/crashpoint"
)

// layerSource is a layer's tar stream, readable more than once: the tree
// is built from one read, the file contents are copied from another.
type layerSource interface {
	// each calls fn for every entry of the layer, in order, with its
	// index. fn may read body; a non-nil error from fn stops the walk
	// and is returned. stop, when fn returns it, ends the walk early
	// without an error.
	each(ctx context.Context, fn func(i int, hdr *tar.Header, body io.Reader) error) error
}

// errStop ends a layerSource walk early without an error.
var errStop = errors.New("stop")

// readLayers builds the tree from the layers, lowest first.
func (r *rootfs) readLayers(ctx context.Context, layers []layerSource, progress Progress) error {
	r.layers = layers
	for i, l := range layers {
		r.layer = i + 1
		progress("reading layers", int64(i), int64(len(layers)))
		err := l.each(ctx, func(n int, hdr *tar.Header, body io.Reader) error {
			return r.apply(hdr, body, n)
		})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		crashpoint.Hit(crashpoint.ImageLayerUnpacked)
	}
	progress("reading layers", int64(len(layers)), int64(len(layers)))
	return nil
}

// emit writes the tree as one tar stream that tar2ext4 turns into the
// image: directories, symlinks, devices and banger's files from the tree,
// then each layer file at its final names, read from its layer. Parents
// come before children and a file before its other hardlinked names.
func (r *rootfs) emit(ctx context.Context, tw *tar.Writer, layers []layerSource) error {
	want := make([]map[int]*fileData, len(layers)+1)
	last := make([]int, len(layers)+1)
	root := r.root.hdr
	root.Name = "./"
	if err := writeHeader(tw, root); err != nil {
		return err
	}
	if err := writePad(tw, r.pad); err != nil {
		return err
	}
	err := r.walk(func(rel string, n *node) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		h := n.hdr
		h.Name = rel
		switch {
		case n.isDir():
			h.Name += "/"
		case n.file != nil:
			f := n.file
			if f.paths = append(f.paths, rel); len(f.paths) > 1 {
				return nil // another name, written by writeLinks
			}
			if f.layer == 0 {
				return writeOwn(tw, h, f)
			}
			if want[f.layer] == nil {
				want[f.layer] = map[int]*fileData{}
			}
			want[f.layer][f.entry] = f
			last[f.layer] = max(last[f.layer], f.entry)
			return nil // written with its content below
		}
		return writeHeader(tw, h)
	})
	if err != nil {
		return err
	}
	for i, l := range layers {
		w := want[i+1]
		if len(w) == 0 {
			continue
		}
		err := l.each(ctx, func(n int, hdr *tar.Header, body io.Reader) error {
			if f := w[n]; f != nil {
				if err := writeLayerFile(tw, r.headerOf(f), f, body); err != nil {
					return err
				}
			}
			if n >= last[i+1] {
				return errStop
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return r.writeLinks(tw)
}

// padDir holds the empty files that make tar2ext4 reserve inodes; the
// build removes it (finishExt4), leaving the inodes free.
const padDir = ".banger-inode-reserve"

func writePad(tw *tar.Writer, n int) error {
	if n == 0 {
		return nil
	}
	if err := tw.WriteHeader(&tar.Header{Name: padDir + "/", Typeflag: tar.TypeDir, Mode: 0o700}); err != nil {
		return err
	}
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: padDir + "/" + strconv.Itoa(i), Typeflag: tar.TypeReg, Mode: 0o600}); err != nil {
			return err
		}
	}
	return nil
}

// headerOf finds the header of the node holding f.
func (r *rootfs) headerOf(f *fileData) tar.Header {
	n, _, _ := r.lookup(f.paths[0], false)
	h := n.hdr
	h.Name = f.paths[0]
	return h
}

// writeLinks writes the other names of every hardlinked file.
func (r *rootfs) writeLinks(tw *tar.Writer) error {
	seen := map[*fileData]bool{}
	return r.walk(func(_ string, n *node) error {
		f := n.file
		if f == nil || seen[f] || len(f.paths) < 2 {
			return nil
		}
		seen[f] = true
		for _, p := range f.paths[1:] {
			if err := tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeLink, Linkname: f.paths[0], Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		return nil
	})
}

func writeHeader(tw *tar.Writer, h tar.Header) error {
	h.Size, h.Format = 0, tar.FormatPAX
	if h.Typeflag != tar.TypeSymlink {
		h.Linkname = ""
	}
	return tw.WriteHeader(&h)
}

func writeLayerFile(tw *tar.Writer, h tar.Header, f *fileData, body io.Reader) error {
	h.Size, h.Format = f.size, tar.FormatPAX
	if err := tw.WriteHeader(&h); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, body, f.size); err != nil {
		return fmt.Errorf("copying /%s: %w", h.Name, err)
	}
	return nil
}

// writeOwn writes a file banger put in the tree: bytes, or a regular file
// of banger's own on the host, opened without following symlinks.
func writeOwn(tw *tar.Writer, h tar.Header, f *fileData) error {
	if f.hostPath == "" {
		h.Size, h.Format = int64(len(f.body)), tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
		_, err := tw.Write(f.body)
		return err
	}
	in, st, err := openRegular(f.hostPath)
	if err != nil {
		return err
	}
	defer in.Close()
	h.Size, h.Format = st.Size(), tar.FormatPAX
	if err := tw.WriteHeader(&h); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, in, st.Size()); err != nil {
		return fmt.Errorf("copying %s: %w", f.hostPath, err)
	}
	return nil
}

// tarLayer is a layer read from an uncompressed tar stream that open
// returns afresh each time.
type tarLayer struct {
	open func() (io.Reader, func() error, func(), error) // stream, verify (after a full read), close
}

func (l tarLayer) each(ctx context.Context, fn func(int, *tar.Header, io.Reader) error) error {
	rd, verify, closeFn, err := l.open()
	if err != nil {
		return err
	}
	defer closeFn()
	tr := tar.NewReader(ctxReader{ctx, rd})
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if verify != nil {
				return verify()
			}
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading layer: %w", err)
		}
		if err := fn(n, hdr, tr); errors.Is(err, errStop) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// hostTree walks a directory banger built itself on the host
// (debootstrap's) into the tree. Symlinks are recorded, never followed;
// files are opened only when their contents are copied, without following
// symlinks. Sockets are skipped.
func (r *rootfs) addHostTree(ctx context.Context, dir string) error {
	r.layer = 1
	inodes := map[[2]uint64]*node{}
	return walkHost(ctx, dir, func(rel string, st *unix.Stat_t) error {
		h := tar.Header{Name: rel, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
			ModTime: timespec(st.Mtim), Devmajor: int64(unix.Major(st.Rdev)), Devminor: int64(unix.Minor(st.Rdev))}
		p := dir + "/" + rel
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			h.Typeflag = tar.TypeDir
		case unix.S_IFREG:
			h.Typeflag, h.Size = tar.TypeReg, st.Size
			key := [2]uint64{st.Dev, st.Ino}
			if first := inodes[key]; first != nil && st.Nlink > 1 {
				return r.link(rel, first)
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, target
		case unix.S_IFCHR:
			h.Typeflag = tar.TypeChar
		case unix.S_IFBLK:
			h.Typeflag = tar.TypeBlock
		case unix.S_IFIFO:
			h.Typeflag = tar.TypeFifo
		default:
			return nil // sockets
		}
		h.PAXRecords = hostXattrs(p, st)
		var body io.Reader
		if captured[rel] && h.Typeflag == tar.TypeReg {
			b, err := readCapped(p)
			if err != nil {
				return err
			}
			body = bytes.NewReader(b)
		}
		if err := r.apply(&h, body, 0); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			n, _, err := r.lookup(rel, false)
			if err != nil {
				return err
			}
			n.file.layer, n.file.hostPath = 0, p
			inodes[[2]uint64{st.Dev, st.Ino}] = n
		}
		return nil
	})
}

// link adds rel as another name of first's file.
func (r *rootfs) link(rel string, first *node) error {
	parent, name, err := r.resolveParent(rel, true, false)
	if err != nil {
		return err
	}
	n := *first
	parent.dir.children[name] = &n
	return nil
}

// readCapped reads the first captureMax+1 bytes of the regular file p,
// without following symlinks.
func readCapped(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, captureMax+1))
}

// walkHost calls fn for everything below dir, parents first, without
// following symlinks.
func walkHost(ctx context.Context, dir string, fn func(rel string, st *unix.Stat_t) error) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		if rel == "" {
			rel = "."
		}
		return fn(rel, &st)
	})
}

func timespec(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec).UTC() }

func hostXattrs(p string, st *unix.Stat_t) map[string]string {
	if st.Mode&unix.S_IFMT != unix.S_IFREG && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		val := make([]byte, 4096)
		if m, err := unix.Lgetxattr(p, name, val); err == nil {
			out[xattrPAX+name] = string(val[:m])
		}
	}
	return out
}
