package client

import (
	"banger/internal/atomicfile"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

// PutFile writes r to path in the VM with mode.
func (c *Client) PutFile(ctx context.Context, vm, guestPath string, mode uint32, r io.Reader) error {
	q := url.Values{"path": {guestPath}, "mode": {strconv.FormatUint(uint64(mode), 8)}}
	return c.put(ctx, path("vms", vm, "files")+"?"+q.Encode(), "application/octet-stream", r)
}

// GetFile streams path from the VM.
func (c *Client) GetFile(ctx context.Context, vm, guestPath string) (io.ReadCloser, error) {
	q := url.Values{"path": {guestPath}}
	return c.Raw(ctx, http.MethodGet, path("vms", vm, "files")+"?"+q.Encode())
}

// put sends r as the body of a PUT to p.
func (c *Client) put(ctx context.Context, p, contentType string, r io.Reader) error {
	req, err := c.newRequest(ctx, http.MethodPut, p, nil)
	if err != nil {
		return err
	}
	req.Body = io.NopCloser(r)
	req.Header.Set("Content-Type", contentType)
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// CopyToVM writes the regular file hostPath to guestPath in vm, with its
// mode. The guest file is written atomically.
func (c *Client) CopyToVM(ctx context.Context, vm, guestPath, hostPath string) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", hostPath)
	}
	return c.PutFile(ctx, vm, guestPath, uint32(st.Mode().Perm()), f)
}

// CopyFromVM writes guestPath of vm to hostPath, replacing it atomically:
// the data goes to a fresh, unpredictable name (O_EXCL, mode 0600) in
// hostPath's directory, so no planted file or symlink is written
// through, then is renamed over hostPath.
func (c *Client) CopyFromVM(ctx context.Context, vm, guestPath, hostPath string) error {
	rc, err := c.GetFile(ctx, vm, guestPath)
	if err != nil {
		return err
	}
	defer rc.Close()
	// No planted file or symlink at hostPath is written through.
	return atomicfile.Write(hostPath, 0o600, func(f *os.File) error {
		if _, err := io.Copy(f, rc); err != nil {
			return fmt.Errorf("copying %s:%s: %w", vm, guestPath, err)
		}
		return nil
	})
}
