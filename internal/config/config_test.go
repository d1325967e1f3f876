package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeConfig writes body to a config.toml in a fresh directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	cfg, src, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(Default(), cfg, cmpNet); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	for _, k := range Keys() {
		if got := src.Of(k); got != SourceDefault {
			t.Errorf("source of %s = %q, want %q", k, got, SourceDefault)
		}
	}
}

var cmpNet = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestLoadEveryKey(t *testing.T) {
	home := userHome()
	tests := []struct {
		name string
		body string
		want func(c *Config)
	}{
		{"default_image_name", `default_image_name = "alpine-3.20"`, func(c *Config) { c.DefaultImageName = "alpine-3.20" }},
		{"ssh_key_path absolute", `ssh_key_path = "/keys/id"`, func(c *Config) { c.SSHKeyPath = "/keys/id" }},
		{"ssh_key_path home", `ssh_key_path = "~/.ssh/id_ed25519"`, func(c *Config) { c.SSHKeyPath = filepath.Join(home, ".ssh/id_ed25519") }},
		{"ssh_key_path empty", `ssh_key_path = ""`, func(c *Config) {}},
		{"firecracker_bin name", `firecracker_bin = "fc"`, func(c *Config) { c.FirecrackerBin = "fc" }},
		{"firecracker_bin path", `firecracker_bin = "/opt/fc/firecracker"`, func(c *Config) { c.FirecrackerBin = "/opt/fc/firecracker" }},
		{"jailer_bin", `jailer_bin = "jailer"`, func(c *Config) { c.JailerBin = "jailer" }},
		{"jailer_bin empty", `jailer_bin = ""`, func(c *Config) {}},
		{"vmm auto", `vmm = "auto"`, func(c *Config) {}},
		{"vmm firecracker", `vmm = "firecracker"`, func(c *Config) { c.VMM = VMMFirecracker }},
		{"vmm qemu", `vmm = "qemu"`, func(c *Config) { c.VMM = VMMQEMU }},
		{"qemu_bin", `qemu_bin = "/usr/local/bin/qemu-system-x86_64"`, func(c *Config) { c.QEMUBin = "/usr/local/bin/qemu-system-x86_64" }},
		{"web_listen_addr", `web_listen_addr = "127.0.0.1:8080"`, func(c *Config) { c.WebListenAddr = "127.0.0.1:8080" }},
		{"web_listen_addr ipv6", `web_listen_addr = "[::1]:80"`, func(c *Config) { c.WebListenAddr = "[::1]:80" }},
		{"web_listen_addr disabled", `web_listen_addr = ""`, func(c *Config) { c.WebListenAddr = "" }},
		{"web_listen_addr localhost", `web_listen_addr = "localhost:7000"`, func(c *Config) { c.WebListenAddr = "localhost:7000" }},
		{"web_listen_addr remote allowed", "web_allow_remote = true\nweb_listen_addr = \"0.0.0.0:7777\"", func(c *Config) {
			c.WebListenAddr, c.WebAllowRemote = "0.0.0.0:7777", true
		}},
		{"bridge_name", `bridge_name = "br-dev.15chars0"`, func(c *Config) { c.BridgeName = "br-dev.15chars0" }},
		{"bridge_ip", `bridge_ip = "172.16.0.254"`, func(c *Config) { c.BridgeIP = netip.MustParseAddr("172.16.0.254") }},
		{"cidr alone moves bridge_ip", `cidr = "10.20.0.0/16"`, func(c *Config) {
			c.CIDR = netip.MustParsePrefix("10.20.0.0/16")
			c.BridgeIP = netip.MustParseAddr("10.20.0.1")
		}},
		{"cidr and bridge_ip", "cidr = \"10.0.0.0/30\"\nbridge_ip = \"10.0.0.2\"", func(c *Config) {
			c.CIDR = netip.MustParsePrefix("10.0.0.0/30")
			c.BridgeIP = netip.MustParseAddr("10.0.0.2")
		}},
		{"cidr /8", `cidr = "10.0.0.0/8"`, func(c *Config) {
			c.CIDR = netip.MustParsePrefix("10.0.0.0/8")
			c.BridgeIP = netip.MustParseAddr("10.0.0.1")
		}},
		{"tap_pool_size 0", `tap_pool_size = 0`, func(c *Config) { c.TapPoolSize = 0 }},
		{"image_max_bytes size", `image_max_bytes = "64M"`, func(c *Config) { c.ImageMaxBytes = 64 << 20 }},
		{"image_max_bytes GiB", `image_max_bytes = "2GiB"`, func(c *Config) { c.ImageMaxBytes = 2 << 30 }},
		{"image_max_bytes bytes", `image_max_bytes = 2097152`, func(c *Config) { c.ImageMaxBytes = 2 << 20 }},
		{"image_max_entries", `image_max_entries = 1000`, func(c *Config) { c.ImageMaxEntries = 1000 }},
		{"console_log_max_mib", `console_log_max_mib = 64`, func(c *Config) { c.ConsoleLogMaxMiB = 64 }},
		{"session_log_max_mib", `session_log_max_mib = 100`, func(c *Config) { c.SessionLogMaxMiB = 100 }},
		{"tap_pool_size 64", `tap_pool_size = 64`, func(c *Config) { c.TapPoolSize = 64 }},
		{"warm_start off", `warm_start = false`, func(c *Config) { c.WarmStart = false }},
		{"vm_cpus", `vm_cpus = 4`, func(c *Config) { c.VMCPUs = 4 }},
		{"vm_memory size", `vm_memory = "2G"`, func(c *Config) { c.VMMemoryMiB = 2048 }},
		{"vm_memory MiB", `vm_memory = 512`, func(c *Config) { c.VMMemoryMiB = 512 }},
		{"vm_memory GiB fraction", `vm_memory = "1.5GiB"`, func(c *Config) { c.VMMemoryMiB = 1536 }},
		{"vm_disk size", `vm_disk = "64G"`, func(c *Config) { c.VMDiskBytes = 64 << 30 }},
		{"vm_disk MiB", `vm_disk = 4096`, func(c *Config) { c.VMDiskBytes = 4 << 30 }},
		{"vm_disk rounded down to MiB", `vm_disk = "1048577K"`, func(c *Config) { c.VMDiskBytes = 1 << 30 }},
		{"default_dns", `default_dns = ["1.1.1.1", "2606:4700:4700::1111"]`, func(c *Config) {
			c.DefaultDNS = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700:4700::1111")}
		}},
		{"default_dns empty", `default_dns = []`, func(c *Config) { c.DefaultDNS = []netip.Addr{} }},
		{"debian_mirror http", `debian_mirror = "http://deb.debian.org/debian"`, func(c *Config) { c.DebianMirror = "http://deb.debian.org/debian" }},
		{"debian_mirror https", `debian_mirror = "https://mirror.example/debian/"`, func(c *Config) { c.DebianMirror = "https://mirror.example/debian/" }},
		{"debian_mirror empty", `debian_mirror = ""`, func(c *Config) {}},
		{"debian_keyring", `debian_keyring = "/k/ring.gpg"`, func(c *Config) { c.DebianKeyring = "/k/ring.gpg" }},
		{"crlf line endings", "vmm = \"qemu\"\r\ntap_pool_size = 1\r\n", func(c *Config) { c.VMM = VMMQEMU; c.TapPoolSize = 1 }},
		{"comments and blank lines", "# banger\n\n  vmm = \"qemu\" # inline\n", func(c *Config) { c.VMM = VMMQEMU }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := Load(writeConfig(t, tt.body))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmpNet); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadAllKeysAtOnceAndSources(t *testing.T) {
	body := `# every key
default_image_name = "debian-bookworm"
ssh_key_path = "/k/id"
firecracker_bin = "firecracker"
jailer_bin = "jailer"
vmm = "qemu"
qemu_bin = "qemu-system-x86_64"
web_listen_addr = ""
bridge_name = "bg1"
bridge_ip = "192.168.50.1"
cidr = "192.168.50.0/24"
tap_pool_size = 4
default_dns = ["9.9.9.9"]
debian_mirror = "http://deb.debian.org/debian"
image_max_bytes = "8G"
image_max_entries = 100000
console_log_max_mib = 16
session_log_max_mib = 32
credential_files = ["~/.claude/.credentials.json"]
debian_keyring = "/etc/banger/test-keyring.gpg"
vm_cpus = 4
vm_memory = "2G"
vm_disk = "32G"
warm_start = false
web_allow_remote = false
`
	p := writeConfig(t, body)
	_, src, err := Load(p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Sources{}
	for i, line := range strings.Split(body, "\n") {
		if k, _, ok := strings.Cut(line, " = "); ok {
			want[k] = p + ":" + strconv.Itoa(i+1)
		}
	}
	if len(want) != len(Keys()) {
		t.Fatalf("test body sets %d keys, want all %d", len(want), len(Keys()))
	}
	if diff := cmp.Diff(want, src); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}
}

// BANGER_WARM_START overrides warm_start, from the file or the default;
// a value that is not a boolean is an error naming the variable.
func TestWarmStartEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte("warm_start = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(WarmStartEnv, "false")
	for _, p := range []string{path, filepath.Join(dir, "missing.toml")} {
		cfg, src, err := Load(p)
		if err != nil || cfg.WarmStart || src.Of("warm_start") != "$BANGER_WARM_START" {
			t.Errorf("Load(%s) with %s=false: warm_start %v from %q, %v", p, WarmStartEnv, cfg.WarmStart, src.Of("warm_start"), err)
		}
	}
	t.Setenv(WarmStartEnv, "maybe")
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "BANGER_WARM_START") {
		t.Errorf("Load with %s=maybe: %v, want an error naming it", WarmStartEnv, err)
	}
}
