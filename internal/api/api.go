// Package api holds the wire types of bangerd's HTTP/JSON API and its error
// categories. The daemon, the typed client and the web UI share it.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Version is the API version this build speaks; it is part of every URL.
const Version = "v1"

// VersionHeader carries the build version of the peer on every request and
// response, so a CLI and a daemon of different builds notice each other.
const VersionHeader = "Banger-Version"

// Code is an error category. The API maps a few categories to HTTP
// statuses; everything else is internal.
type Code string

const (
	NotFound        Code = "not_found"        // 404: the named thing does not exist
	Conflict        Code = "conflict"         // 409: name taken, in use, wrong state
	InvalidArgument Code = "invalid_argument" // 400: bad input; the message lists valid values
	Unavailable     Code = "unavailable"      // 503: a host prerequisite is missing
	Canceled        Code = "canceled"         // 499: the caller went away
	Timeout         Code = "timeout"          // 504: a bounded wait ran out
	Internal        Code = "internal"         // 500: a bug or an unexpected failure
	// PermissionDenied (403): the caller may not use this daemon.
	PermissionDenied Code = "permission_denied"
)

var statuses = map[Code]int{
	NotFound:         http.StatusNotFound,
	Conflict:         http.StatusConflict,
	InvalidArgument:  http.StatusBadRequest,
	Unavailable:      http.StatusServiceUnavailable,
	Canceled:         499,
	Timeout:          http.StatusGatewayTimeout,
	Internal:         http.StatusInternalServerError,
	PermissionDenied: http.StatusForbidden,
}

// HTTPStatus returns the HTTP status for c.
func (c Code) HTTPStatus() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForStatus maps an HTTP status back to a category.
func CodeForStatus(status int) Code {
	for c, s := range statuses {
		if s == status {
			return c
		}
	}
	return Internal
}

// Error is an error as it travels over the API.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Hint says what to do next, when the daemon knows.
	Hint string `json:"hint,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error of category c.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// WithHint returns a copy of e with hint set.
func (e *Error) WithHint(hint string) *Error {
	c := *e
	c.Hint = hint
	return &c
}

// CodeOf returns the category of err: the Code of the first *Error in its
// chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// EventType says what an Event in a progress stream carries.
type EventType string

const (
	EventProgress EventType = "progress" // a phase moved on
	EventLog      EventType = "log"      // a line for the user
	EventResult   EventType = "result"   // the final value; the stream ends
	EventError    EventType = "error"    // the operation failed; the stream ends
)

// Event is one line of a streamed (application/x-ndjson) response, used
// by long operations: pulls, builds, boots.
type Event struct {
	Type    EventType       `json:"type"`
	Phase   string          `json:"phase,omitempty"`
	Message string          `json:"message,omitempty"`
	Done    int64           `json:"done,omitempty"`
	Total   int64           `json:"total,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

// StreamContentType is the media type of progress streams.
const StreamContentType = "application/x-ndjson"
