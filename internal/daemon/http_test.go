package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Errors from the packages under the daemon map to the API's categories.
func TestToAPICategories(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want api.Code
	}{
		{fmt.Errorf("vm x: %w", store.ErrNotExist), api.NotFound},
		{fmt.Errorf("vm x: %w", store.ErrExist), api.Conflict},
		{context.Canceled, api.Canceled},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), api.Timeout},
		{fmt.Errorf("firecracker: %w", vmm.ErrUnavailable), api.Unavailable},
		{api.Errorf(api.InvalidArgument, "bad"), api.InvalidArgument},
		{errors.New("boom"), api.Internal},
	} {
		if got := toAPI(tc.err).Code; got != tc.want {
			t.Errorf("toAPI(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// An error response carries the category's status and a JSON body the
// client decodes back, hint included.
func TestWriteErrBody(t *testing.T) {
	rec := httptest.NewRecorder()
	writeErr(rec, api.Errorf(api.Conflict, "vm name %q is taken", "dev").WithHint("pick another --name"))
	if rec.Code != http.StatusConflict {
		t.Fatalf("status %d", rec.Code)
	}
	var body api.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error.Code != api.Conflict || body.Error.Hint != "pick another --name" {
		t.Fatalf("body %+v", body.Error)
	}
}

// A progress stream ends with exactly one error event carrying the code.
func TestStreamFinishError(t *testing.T) {
	rec := httptest.NewRecorder()
	st := newStream(rec)
	st.Progress("copying", 1, 2)
	st.finish(nil, api.Errorf(api.NotFound, "gone"))
	dec := json.NewDecoder(rec.Body)
	var evs []api.Event
	for dec.More() {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 2 || evs[0].Type != api.EventProgress || evs[1].Type != api.EventError || evs[1].Error.Code != api.NotFound {
		t.Fatalf("events %+v", evs)
	}
}
