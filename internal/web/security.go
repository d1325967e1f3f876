package web

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"

	"banger/internal/api"
)

// check refuses what a page on another site could make a browser send:
//   - any request whose Host is not loopback (unless Remote): a
//     DNS-rebinding page would name its own host, and must not read the
//     page's token;
//   - a state-changing request (anything but GET and HEAD, and every
//     terminal WebSocket, which types into a shell) whose Origin is not
//     the page's own, or that lacks the token.
func (h *Handler) check(r *http.Request) *api.Error {
	if !h.opts.Remote && !loopbackHost(r.Host) {
		return api.Errorf(api.PermissionDenied, "host %q is not a loopback address; the web UI answers only http://127.0.0.1 or http://localhost", r.Host).
			WithHint("open the address bangerd logs at start (web_listen_addr), or set web_allow_remote = true")
	}
	if !changesState(r) {
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" || origin != "http://"+r.Host {
		return api.Errorf(api.PermissionDenied, "cross-origin request refused: Origin %q is not this page's (http://%s)", origin, r.Host).
			WithHint("changes come only from the banger page itself; from a script, use the banger CLI")
	}
	token := r.Header.Get(TokenHeader)
	if isWebSocket(r) {
		// A browser cannot set headers on a WebSocket: the token comes
		// in the query.
		token = r.URL.Query().Get("token")
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(h.token)) != 1 {
		return api.Errorf(api.PermissionDenied, "missing or stale %s token", TokenHeader).
			WithHint("reload the page: bangerd makes a new token each time it starts")
	}
	return nil
}

func changesState(r *http.Request) bool {
	return (r.Method != http.MethodGet && r.Method != http.MethodHead) || isWebSocket(r)
}

func isWebSocket(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || r.Header.Get("Sec-WebSocket-Key") != ""
}

// loopbackHost reports whether a Host header names a loopback address or
// localhost, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
