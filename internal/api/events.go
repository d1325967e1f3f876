package api

// EventsContentType is the Content-Type of GET /v1/events: server-sent
// events (text/event-stream), one "vm" event per Change as JSON, after a
// "hello" event carrying the daemon's VersionInfo.
const EventsContentType = "text/event-stream"

// Change is one committed change to a VM, as GET /v1/events sends it.
// It says what changed, not the whole record: fetch GET /v1/vms/{name}
// for that, so there is one source of truth.
type Change struct {
	Action string `json:"action"` // created, updated or deleted
	Name   string `json:"name"`
	ID     string `json:"id"`
	State  string `json:"state,omitempty"` // empty when deleted
}

// WebStatus is the state of the daemon's web UI (GET /v1/version).
type WebStatus struct {
	// Addr is the configured web_listen_addr; empty: disabled.
	Addr string `json:"addr"`
	// URL is set while the UI is served.
	URL string `json:"url,omitempty"`
	// Error says why it is not served (e.g. the port is in use).
	Error string `json:"error,omitempty"`
	// Remote is set when web_allow_remote let a non-loopback address in.
	Remote bool `json:"remote,omitempty"`
}
