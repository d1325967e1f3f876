package config

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeysSortedAndComplete(t *testing.T) {
	want := []string{"bridge_ip", "bridge_name", "cidr", "console_log_max_mib", "credential_files", "debian_keyring", "debian_mirror", "default_dns",
		"default_image_name", "firecracker_bin", "image_max_bytes", "image_max_entries", "jailer_bin", "qemu_bin", "session_log_max_mib", "ssh_key_path",
		"tap_pool_size", "vm_cpus", "vm_disk", "vm_memory", "vmm", "warm_start", "web_allow_remote", "web_listen_addr"}
	if diff := cmp.Diff(want, Keys()); diff != "" {
		t.Errorf("Keys() (-want +got):\n%s", diff)
	}
}

func TestShow(t *testing.T) {
	p := writeConfig(t, "vmm = \"qemu\"\n\ndefault_dns = [\"1.1.1.1\", \"::1\"]\ntap_pool_size = 0\n")
	cfg, src, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	got := Show(cfg, src)
	want := []string{
		`bridge_ip = "172.16.0.1"`, "# from default",
		`default_dns = ["1.1.1.1", "::1"]`, "# from " + p + ":3",
		`tap_pool_size = 0`, "# from " + p + ":4",
		`vm_cpus = 2`, `vm_disk = "16G"`, `vm_memory = "1G"`,
		`vmm = "qemu"`, "# from " + p + ":1",
		`web_listen_addr = "127.0.0.1:7777"`,
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != len(Keys()) {
		t.Fatalf("Show printed %d lines, want %d:\n%s", len(lines), len(Keys()), got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("Show output lacks %q:\n%s", w, got)
		}
	}
	col := strings.Index(lines[0], "#")
	for _, l := range lines {
		if strings.Index(l, "#") != col {
			t.Errorf("comments not aligned:\n%s", got)
			break
		}
	}
}

func TestEntriesJSON(t *testing.T) {
	p := writeConfig(t, "default_dns = [\"9.9.9.9\"]\ntap_pool_size = 3\n")
	cfg, src, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Entries(cfg, src))
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	byKey := map[string]map[string]any{}
	for _, e := range got {
		byKey[e["key"].(string)] = e
	}
	want := map[string]map[string]any{
		"default_dns":   {"key": "default_dns", "value": []any{"9.9.9.9"}, "source": p + ":1"},
		"tap_pool_size": {"key": "tap_pool_size", "value": 3.0, "source": p + ":2"},
		"cidr":          {"key": "cidr", "value": "172.16.0.0/24", "source": "default"},
	}
	for k, w := range want {
		if diff := cmp.Diff(w, byKey[k]); diff != "" {
			t.Errorf("entry %s (-want +got):\n%s", k, diff)
		}
	}
	if len(got) != len(Keys()) {
		t.Errorf("%d entries, want %d", len(got), len(Keys()))
	}
}

func TestSSHKey(t *testing.T) {
	d := Dirs{Config: "/home/u/.config/banger"}
	if got := Default().SSHKey(d); got != "/home/u/.config/banger/ssh/id_ed25519" {
		t.Errorf("default SSHKey = %q", got)
	}
	c := Default()
	c.SSHKeyPath = "/k/id"
	if got := c.SSHKey(d); got != "/k/id" {
		t.Errorf("SSHKey = %q, want /k/id", got)
	}
}
