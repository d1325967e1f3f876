// Package unixhttp carries HTTP over a Unix socket: bangerd's API and
// Firecracker's both listen on one.
package unixhttp

import (
	"context"
	"net"
	"net/http"
)

// Transport returns an HTTP transport that sends every request to the
// Unix socket at path, whatever host its URL names. Callers tune the
// returned transport (keep-alives, compression) for their server.
func Transport(path string) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
}
