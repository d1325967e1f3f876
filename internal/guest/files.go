package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// Put writes the content of r to path in the guest with the given mode
// and ownership. The file is replaced atomically (temp file and rename)
// and its parent directories are created.
func (c *Client) Put(ctx context.Context, path string, mode fs.FileMode, uid, gid int, r io.Reader) error {
	return c.PutFile(ctx, PutRequest{Path: path, Mode: mode, UID: uid, GID: gid}, r)
}

// PutFile is Put with every field of PutRequest, mtime included.
func (c *Client) PutFile(ctx context.Context, req PutRequest, r io.Reader) error {
	if err := c.upload(ctx, Request{Op: OpPut, Put: &req}, r); err != nil {
		return fmt.Errorf("put %s: %w", req.Path, err)
	}
	return nil
}

// PutTar extracts the tar stream r under dir in the guest (created when
// missing). Entries may be regular files, directories, symlinks and hard
// links; their modes, ownership and mtimes are kept. Entries that would
// land outside dir are rejected.
func (c *Client) PutTar(ctx context.Context, dir string, r io.Reader) error {
	if err := c.upload(ctx, Request{Op: OpPutTar, PutTar: &PutTarRequest{Dir: dir}}, r); err != nil {
		return fmt.Errorf("put tar under %s: %w", dir, err)
	}
	return nil
}

// upload sends req, streams r as FrameData + FrameEOF and waits for the
// answer. An early answer (an error from the agent) stops the upload.
func (c *Client) upload(ctx context.Context, req Request, r io.Reader) error {
	cl, err := c.start(ctx, req)
	if err != nil {
		return err
	}
	defer cl.close()
	answer := make(chan error, 1)
	go func() {
		_, err := cl.response()
		if err != nil {
			// Unblock a sender stuck on flow control.
			_ = cl.conn.SetWriteDeadline(time.Now())
		}
		answer <- err
	}()
	sendErr := sendContent(cl, r)
	if sendErr != nil {
		_ = cl.conn.SetReadDeadline(time.Now())
	} else {
		// All sent: the agent answers once it has the file on its disk.
		_ = cl.conn.SetReadDeadline(time.Now().Add(UploadAnswerTimeout))
	}
	err = <-answer
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		return err // the agent's reason beats our send error
	case sendErr != nil:
		return sendErr
	}
	return err
}

// sendContent streams r as data frames and ends it with FrameEOF.
func sendContent(cl *call, r io.Reader) error {
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := cl.fw.WriteFrame(FrameData, buf[:n]); err != nil {
				return cl.wrap("sending content", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading content: %w", rerr)
		}
	}
	if err := cl.fw.WriteFrame(FrameEOF, nil); err != nil {
		return cl.wrap("sending content", err)
	}
	return nil
}

// Get streams the content of the guest's regular file path to w and
// returns its metadata. A missing file yields an error matching
// fs.ErrNotExist.
func (c *Client) Get(ctx context.Context, path string, w io.Writer) (FileInfo, error) {
	info, err := c.get(ctx, path, w)
	if err != nil {
		return FileInfo{}, fmt.Errorf("get %s: %w", path, err)
	}
	return info, nil
}

func (c *Client) get(ctx context.Context, path string, w io.Writer) (FileInfo, error) {
	cl, err := c.start(ctx, Request{Op: OpGet, Get: &GetRequest{Path: path}})
	if err != nil {
		return FileInfo{}, err
	}
	defer cl.close()
	resp, err := cl.answer()
	if err != nil {
		return FileInfo{}, err
	}
	if resp.File == nil {
		return FileInfo{}, errors.New("agent sent no file info")
	}
	var got int64
	for {
		f, err := cl.read()
		if err != nil {
			return FileInfo{}, err
		}
		switch f.Type {
		case FrameData:
			if _, err := w.Write(f.Payload); err != nil {
				return FileInfo{}, fmt.Errorf("writing content: %w", err)
			}
			got += int64(len(f.Payload))
		case FrameEOF:
			info := *resp.File
			info.Size = got // what was sent, should the file have changed
			return info, nil
		case FrameError:
			return FileInfo{}, DecodeError(f)
		default:
			return FileInfo{}, fmt.Errorf("unexpected %v frame in get stream", f.Type)
		}
	}
}
