// Package unixhttp carries HTTP over a Unix socket: bangerd's API and
// Firecracker's both listen on one.
package unixhttp

import (
	"context"
	"net"
	"net/http"
)

// Client is an HTTP client whose requests all go to the server on one
// Unix socket, whatever host their URLs name. It is safe for concurrent
// use.
type Client struct {
	http.Client
	socket string
}

// NewClient returns a client for the socket at path. tune, when not nil,
// adjusts its transport (keep-alives, compression) to the server.
func NewClient(path string, tune func(*http.Transport)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	if tune != nil {
		tune(tr)
	}
	return &Client{Client: http.Client{Transport: tr}, socket: path}
}

// Socket is the path of the socket.
func (c *Client) Socket() string { return c.socket }
