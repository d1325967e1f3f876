package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestCodesRoundTripThroughHTTPStatus(t *testing.T) {
	for _, c := range []Code{NotFound, Conflict, InvalidArgument, Unavailable, Canceled, Timeout, Internal} {
		t.Run(string(c), func(t *testing.T) {
			if got := CodeForStatus(c.HTTPStatus()); got != c {
				t.Fatalf("CodeForStatus(%d) = %s, want %s", c.HTTPStatus(), got, c)
			}
		})
	}
	if Code("bogus").HTTPStatus() != http.StatusInternalServerError {
		t.Fatal("an unknown code is not internal")
	}
	if CodeForStatus(418) != Internal {
		t.Fatal("an unknown status is not internal")
	}
}

func TestCodeOfWrappedErrors(t *testing.T) {
	base := Errorf(NotFound, "vm %q does not exist", "x")
	wrapped := fmt.Errorf("starting: %w", base)
	if CodeOf(wrapped) != NotFound {
		t.Fatalf("CodeOf(wrapped) = %s", CodeOf(wrapped))
	}
	if CodeOf(errors.New("plain")) != Internal {
		t.Fatal("a plain error is not internal")
	}
	h := base.WithHint("see banger vm list")
	if h.Hint != "see banger vm list" || base.Hint != "" {
		t.Fatalf("WithHint changed the original or lost the hint: %+v %+v", h, base)
	}
}
