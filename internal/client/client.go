// Package client is the typed client of bangerd's API. The CLI, the tests
// and the web UI use it.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/unixhttp"
	"banger/internal/version"
)

// Client talks to one bangerd over its Unix socket.
type Client struct {
	conn *unixhttp.Client
}

// New returns a client for the daemon listening on socket. It does not
// connect; see Ping and Ensure.
func New(socket string) *Client {
	return &Client{conn: unixhttp.NewClient(socket, func(tr *http.Transport) { tr.DisableCompression = true })}
}

// Socket is the path of the daemon's socket.
func (c *Client) Socket() string { return c.conn.Socket() }

// VersionMismatchError reports a CLI and a daemon from different builds.
type VersionMismatchError struct {
	Client, Daemon string
}

func (e *VersionMismatchError) Error() string {
	return fmt.Sprintf("banger is version %s but the running bangerd is version %s", e.Client, e.Daemon)
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bangerd"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set(api.VersionHeader, version.String())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.conn.Do(req)
	if err != nil {
		return nil, fmt.Errorf("talking to bangerd at %s: %w", c.Socket(), err)
	}
	if dv := resp.Header.Get(api.VersionHeader); dv != "" && dv != version.String() && !strings.HasSuffix(req.URL.Path, "/version") && !strings.HasSuffix(req.URL.Path, "/shutdown") {
		resp.Body.Close()
		return nil, &VersionMismatchError{Client: version.String(), Daemon: dv}
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var body api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &body); err != nil || body.Error == nil {
		return &api.Error{Code: api.CodeForStatus(resp.StatusCode), Message: fmt.Sprintf("bangerd answered %s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	return body.Error
}

// Do sends a JSON request and decodes a JSON answer into out (when not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Stream sends a request whose answer is a progress stream. onEvent sees
// every progress and log event; the result is decoded into out.
func (c *Client) Stream(ctx context.Context, method, path string, in, out any, onEvent func(api.Event)) error {
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from bangerd: %w", err)
		}
		switch ev.Type {
		case api.EventResult:
			if out != nil && len(ev.Result) > 0 {
				return json.Unmarshal(ev.Result, out)
			}
			return nil
		case api.EventError:
			return ev.Error
		default:
			if onEvent != nil {
				onEvent(ev)
			}
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("bangerd stream broke: %w", err)
	}
	return errors.New("bangerd ended the stream without a result (did it crash? see bangerd.log in the state directory)")
}

// Raw sends a request and returns the open response body (for logs).
func (c *Client) Raw(ctx context.Context, method, path string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, method, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Version returns the daemon's version info. It never fails on a version
// mismatch, so callers can show both versions.
func (c *Client) Version(ctx context.Context) (api.VersionInfo, error) {
	var v api.VersionInfo
	err := c.Do(ctx, http.MethodGet, "/v1/version", nil, &v)
	return v, err
}

// Ping checks that a daemon answers, within a short time.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := c.Version(ctx)
	return err
}

// Shutdown asks the daemon to exit. VMs keep running; a new daemon
// re-adopts them.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/v1/shutdown", nil, nil)
}

// path joins escaped segments under /v1.
func path(segs ...string) string {
	var b strings.Builder
	b.WriteString("/v1")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
