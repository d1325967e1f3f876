package catalog

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEmbedded(t *testing.T) {
	if _, err := Parse(raw); err != nil {
		t.Fatal(err)
	}
	e, ok := Lookup(DefaultImage)
	if !ok {
		t.Fatalf("default image %q is not in the catalog (names: %v)", DefaultImage, Names())
	}
	if e.Kind != Debootstrap || e.KernelRef != "generic-6.1" {
		t.Errorf("default entry = %+v", e)
	}
	for _, p := range []string{"systemd-sysv", "openssh-server", "docker.io", "git", "jq", "curl", "build-essential", "sudo", "less", "vim-tiny"} {
		if !strings.Contains(" "+strings.Join(e.Packages, " ")+" ", " "+p+" ") {
			t.Errorf("default image lacks package %s", p)
		}
	}
	if diff := cmp.Diff([]string{"debian-bookworm"}, Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"no kernel", `{"images":[{"name":"a","kind":"oci","ref":"x"}]}`, "no kernel_ref"},
		{"bad kind", `{"images":[{"name":"a","kind":"iso","kernel_ref":"k"}]}`, "unknown kind"},
		{"bundle sha", `{"images":[{"name":"a","kind":"bundle","url":"https://x","sha256":"12","kernel_ref":"k"}]}`, "sha256"},
		{"dup", `{"images":[{"name":"a","kind":"oci","ref":"x","kernel_ref":"k"},{"name":"a","kind":"oci","ref":"x","kernel_ref":"k"}]}`, "twice"},
		{"syntax", `{`, "catalog"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
