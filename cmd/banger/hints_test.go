package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"banger/internal/api"
	"banger/internal/client"
)

func TestHints(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // substring; "" means no hint
	}{
		{"version mismatch", &client.VersionMismatchError{Client: "a", Daemon: "b"}, "banger daemon restart"},
		{"start error carries its own fix", &client.StartError{Cause: "x"}, ""},
		{"daemon hint wins", api.Errorf(api.Conflict, "taken").WithHint("pick another --name"), "pick another --name"},
		{"unavailable points to doctor", api.Errorf(api.Unavailable, "no kvm"), "banger doctor"},
		{"internal points to the log", api.Errorf(api.Internal, "boom"), "bangerd.log"},
		{"refused socket", fmt.Errorf("talking to bangerd: %w", syscall.ECONNREFUSED), "banger daemon start"},
		{"plain error", fmt.Errorf("something"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := hint(tc.err)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Fatalf("hint = %q, want it to contain %q", got, tc.want)
			}
		})
	}
	if !strings.Contains((&client.StartError{Cause: "boom"}).Error(), "sudo bangerd --foreground") {
		t.Fatal("StartError does not say what to run")
	}
}

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]int{"512": 512, "512M": 512, "2G": 2048, "1.5G": 1536, "1GiB": 1024} {
		if got, err := parseMiB("--memory", in); err != nil || got != want {
			t.Errorf("parseMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1G", "0", "0.5", "512K"} {
		if _, err := parseMiB("--memory", bad); err == nil {
			t.Errorf("parseMiB(%q) accepted", bad)
		}
	}
}
