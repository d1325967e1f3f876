package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"banger/internal/atomicfile"
	"banger/internal/guest"
	"banger/internal/untar"
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
	// atomicfile applies mode after fillFile, so fillFile's chown (which
	// clears setuid and setgid) cannot undo it.
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

// putTar runs one OpPutTar stream: the tar is extracted under the
// directory with owners and modes as they are in the archive.
func (s *Server) putTar(ctx context.Context, conn net.Conn, fw *guest.FrameWriter, req *guest.PutTarRequest) error {
	content := guest.NewContentReader(conn)
	if err := extractTar(ctx, req.Dir, content); err != nil {
		werr := fw.WriteError(err)
		_, _ = io.Copy(io.Discard, content)
		return errors.Join(err, werr)
	}
	return fw.WriteJSON(guest.FrameResponse, guest.Response{})
}

func extractTar(ctx context.Context, dir string, r io.Reader) error {
	if !filepath.IsAbs(dir) {
		return invalid("directory %q is not absolute", dir)
	}
	err := untar.Extract(ctx, r, dir, untar.Options{Owners: true})
	if errors.Is(err, untar.ErrUnsafe) {
		return invalid("%v", err)
	}
	return err
}
