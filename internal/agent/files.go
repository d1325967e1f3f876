package agent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/atomicfile"
	"banger/internal/guest"
)

// put runs one OpPut stream: the target is replaced atomically once the
// content is complete.
func (s *Server) put(conn net.Conn, fw *guest.FrameWriter, req *guest.PutRequest) error {
	content := guest.NewContentReader(conn)
	if err := writeFileAtomic(req, content); err != nil {
		// Answer at once (the host stops sending), then drain what is
		// already in flight.
		werr := fw.WriteError(err)
		_, _ = io.Copy(io.Discard, content)
		return errors.Join(err, werr)
	}
	return fw.WriteJSON(guest.FrameResponse, guest.Response{})
}

func writeFileAtomic(req *guest.PutRequest, r io.Reader) error {
	if !filepath.IsAbs(req.Path) {
		return invalid("path %q is not absolute", req.Path)
	}
	if err := os.MkdirAll(filepath.Dir(req.Path), 0o755); err != nil {
		return fmt.Errorf("creating parent: %w", err)
	}
	// atomicfile sets the mode after fillFile's chown, which clears
	// setuid and setgid bits.
	mode := req.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	return atomicfile.Write(req.Path, mode, func(f *os.File) error { return fillFile(f, req, r) })
}

// fillFile writes the content, the owner and the mtime.
func fillFile(f *os.File, req *guest.PutRequest, r io.Reader) error {
	if _, err := io.Copy(f, r); err != nil {
		var re *guest.RemoteError
		if errors.As(err, &re) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("receiving content: %w", err)
		}
		return fmt.Errorf("writing %s: %w", req.Path, err)
	}
	if err := f.Chown(req.UID, req.GID); err != nil {
		return fmt.Errorf("setting owner: %w", err)
	}
	if !req.MTime.IsZero() {
		if err := os.Chtimes(f.Name(), req.MTime, req.MTime); err != nil {
			return fmt.Errorf("setting mtime: %w", err)
		}
	}
	return nil
}

// get runs one OpGet stream.
func (s *Server) get(fw *guest.FrameWriter, req *guest.GetRequest) error {
	f, err := os.Open(req.Path)
	if err != nil {
		return fw.WriteError(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fw.WriteError(err)
	}
	if !st.Mode().IsRegular() {
		return fw.WriteError(invalid("%s is not a regular file", req.Path))
	}
	info := guest.FileInfo{Size: st.Size(), Mode: st.Mode(), MTime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		info.UID, info.GID = int(sys.Uid), int(sys.Gid)
	}
	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{File: &info}); err != nil {
		return err
	}
	if _, err := io.Copy(fw.Chunks(guest.FrameData), f); err != nil {
		// A failed write means the host is gone; a failed read is news.
		return errors.Join(err, fw.WriteError(fmt.Errorf("reading %s: %w", req.Path, err)))
	}
	return fw.WriteFrame(guest.FrameEOF, nil)
}

// putTar runs one OpPutTar stream.
func (s *Server) putTar(conn net.Conn, fw *guest.FrameWriter, req *guest.PutTarRequest) error {
	content := guest.NewContentReader(conn)
	if err := extractTar(req.Dir, content); err != nil {
		werr := fw.WriteError(err)
		_, _ = io.Copy(io.Discard, content)
		return errors.Join(err, werr)
	}
	return fw.WriteJSON(guest.FrameResponse, guest.Response{})
}

// extractTar extracts r under dir. All file operations go through an
// os.Root, so no entry (nor a symlink it creates) can reach outside dir.
func extractTar(dir string, r io.Reader) error {
	if !filepath.IsAbs(dir) {
		return invalid("directory %q is not absolute", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirTimes []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." && hdr.Typeflag != tar.TypeDir {
			return invalid("tar entry %q names the directory itself", hdr.Name)
		}
		if err := extractEntry(root, name, hdr, tr); err != nil {
			return fmt.Errorf("extracting %s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirTimes = append(dirTimes, dirTime{name, hdr.ModTime})
		}
	}
	// Directory mtimes last: extracting their entries changed them.
	for i := len(dirTimes) - 1; i >= 0; i-- {
		_ = root.Chtimes(dirTimes[i].name, dirTimes[i].t, dirTimes[i].t)
	}
	return nil
}

// entryName cleans a tar entry name to a path relative to the root. A
// leading slash is dropped, as tar does; ".." that climbs out is refused.
func entryName(n string) (string, error) {
	rel := strings.TrimLeft(n, "/")
	if rel == "" {
		rel = "."
	}
	if !filepath.IsLocal(rel) {
		return "", invalid("tar entry %q escapes the directory", n)
	}
	return filepath.Clean(rel), nil
}

// extractEntry creates one entry and applies its metadata.
func extractEntry(root *os.Root, name string, hdr *tar.Header, r io.Reader) error {
	if parent := filepath.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := root.MkdirAll(name, 0o755); err != nil {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		if err := removeNonDir(root, name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := removeNonDir(root, name); err != nil {
			return err
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return root.Lchown(name, hdr.Uid, hdr.Gid)
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := removeNonDir(root, name); err != nil {
			return err
		}
		return root.Link(target, name)
	default:
		return nil // devices, fifos: not part of a workspace
	}
	if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := root.Chmod(name, mode); err != nil {
		return err
	}
	return root.Chtimes(name, hdr.ModTime, hdr.ModTime)
}

// removeNonDir removes what is at name unless it is a directory.
func removeNonDir(root *os.Root, name string) error {
	st, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", name)
	}
	return root.Remove(name)
}
