package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCredentialFilesDefaultAndSet(t *testing.T) {
	got := Default().Credentials("/home/u")
	want := []Credential{
		{Host: "/home/u/.local/share/opencode/auth.json", Guest: "/root/.local/share/opencode/auth.json"},
		{Host: "/home/u/.claude/.credentials.json", Guest: "/root/.claude/.credentials.json"},
		{Host: "/home/u/.pi/agent/auth.json", Guest: "/root/.pi/agent/auth.json"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("default credentials (-want +got):\n%s", diff)
	}

	cfg, _, err := Load(writeConfig(t, `credential_files = ["~/.config//gh/hosts.yml", "/home/u/.netrc", "/etc/gitlab/token", "/home/user2/x"]`))
	if err != nil {
		t.Fatal(err)
	}
	got = cfg.Credentials("/home/u")
	want = []Credential{
		{Host: "/home/u/.config/gh/hosts.yml", Guest: "/root/.config/gh/hosts.yml"},
		// An absolute path in the home lands under /root like ~/ does;
		{Host: "/home/u/.netrc", Guest: "/root/.netrc"},
		// any other lands at the same path in the guest.
		{Host: "/etc/gitlab/token", Guest: "/etc/gitlab/token"},
		{Host: "/home/user2/x", Guest: "/home/user2/x"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configured credentials (-want +got):\n%s", diff)
	}

	cfg, _, err = Load(writeConfig(t, `credential_files = []`))
	if err != nil || len(cfg.Credentials("/home/u")) != 0 {
		t.Errorf("credential_files = [] gives %v, %v; want none", cfg.Credentials("/home/u"), err)
	}
}
