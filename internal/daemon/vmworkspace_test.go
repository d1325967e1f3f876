package daemon

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
	"banger/internal/vmm/vmmtest"
)

// A VM's workspace source is recorded, shown in its view, kept across a
// start and a stop, and replaced by the next one; bad input is refused
// and changes nothing.
func TestSetWorkspace(t *testing.T) {
	r := newLifeRig(t, vmmtest.MemOptions{})
	ctx := t.Context()
	v := r.vm(t, "ws")
	if got := r.m.view(ctx, v).Workspace; got != nil {
		t.Fatalf("a new vm has workspace %+v, want none", got)
	}
	src := api.WorkspaceSource{HostPath: "/home/u/repo/", GuestPath: "/root/repo", Branch: "main", Commit: "abc123"}
	got, err := r.m.setWorkspace(ctx, "ws", src)
	if err != nil {
		t.Fatal(err)
	}
	want := &api.WorkspaceSource{HostPath: "/home/u/repo", GuestPath: "/root/repo", Branch: "main", Commit: "abc123"}
	if diff := cmp.Diff(want, got.Workspace); diff != "" {
		t.Fatalf("view after set (-want +got):\n%s", diff)
	}

	// Lifecycle writes of the record keep it.
	if _, err := r.start(ctx, t, r.state(t, "ws"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.stop(ctx, "ws", false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, workspaceOf(r.state(t, "ws"))); diff != "" {
		t.Fatalf("after start and stop (-want +got):\n%s", diff)
	}

	for _, bad := range []api.WorkspaceSource{
		{HostPath: "repo", GuestPath: "/root/repo"},
		{HostPath: "/repo", GuestPath: "root/repo"},
		{HostPath: "", GuestPath: "/root/repo"},
	} {
		if _, err := r.m.setWorkspace(ctx, "ws", bad); api.CodeOf(err) != api.InvalidArgument {
			t.Errorf("setWorkspace(%+v) = %v, want invalid argument", bad, err)
		}
	}
	if _, err := r.m.setWorkspace(ctx, "nope", src); api.CodeOf(err) != api.NotFound {
		t.Errorf("unknown vm: %v, want not found", err)
	}
	if diff := cmp.Diff(want, workspaceOf(r.state(t, "ws"))); diff != "" {
		t.Fatalf("bad input changed the record (-want +got):\n%s", diff)
	}

	next := api.WorkspaceSource{HostPath: "/other", GuestPath: "/srv/other"}
	if _, err := r.m.setWorkspace(ctx, "ws", next); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&next, workspaceOf(r.state(t, "ws"))); diff != "" {
		t.Fatalf("a later workspace replaces the first (-want +got):\n%s", diff)
	}
}
