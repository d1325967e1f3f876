package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadBadValues(t *testing.T) {
	tests := []struct {
		name string
		body string
		line int    // line the error must name
		key  string // key the error must name
		want string // fragment of the message
	}{
		{"unknown key", "vmm = \"qemu\"\ncidrr = \"10.0.0.0/24\"", 2, "cidrr", `unknown key "cidrr" (valid keys: bridge_ip, bridge_name, cidr,`},
		{"unknown table", "[network]\ncidr = \"10.0.0.0/24\"", 1, "network", `unknown key "network"`},
		{"unknown dotted key", "vmm = \"qemu\"\n\nweb.addr = 1", 3, "web", `unknown key "web"`},
		{"dotted known key", `vmm.kind = "qemu"`, 1, "vmm", "vmm: expected a string, got table"},

		{"default_image_name type", `default_image_name = 3`, 1, "default_image_name", "default_image_name: expected a string, got integer"},
		{"default_image_name empty", `default_image_name = ""`, 1, "default_image_name", "must be a non-empty image name"},
		{"default_image_name space", `default_image_name = "a b"`, 1, "default_image_name", "without spaces"},
		{"ssh_key_path type", `ssh_key_path = true`, 1, "ssh_key_path", "ssh_key_path: expected a string, got boolean"},
		{"ssh_key_path relative", `ssh_key_path = "keys/id"`, 1, "ssh_key_path", "must be an absolute path or start with ~/"},
		{"firecracker_bin type", `firecracker_bin = ["fc"]`, 1, "firecracker_bin", "firecracker_bin: expected a string, got array"},
		{"firecracker_bin empty", `firecracker_bin = ""`, 1, "firecracker_bin", "must name a binary"},
		{"firecracker_bin relative path", `firecracker_bin = "bin/fc"`, 1, "firecracker_bin", "absolute path or a bare name"},
		{"jailer_bin type", `jailer_bin = 1.5`, 1, "jailer_bin", "jailer_bin: expected a string, got float"},
		{"vmm enum", "\n\nvmm = \"kvm\"", 3, "vmm", `vmm = "kvm": must be one of auto, firecracker, qemu`},
		{"vmm type", `vmm = 1`, 1, "vmm", "vmm: expected a string, got integer"},
		{"qemu_bin empty", `qemu_bin = ""`, 1, "qemu_bin", "must name a binary"},
		{"qemu_bin type", `qemu_bin = 1979-05-27`, 1, "qemu_bin", "qemu_bin: expected a string, got date/time"},
		{"web_listen_addr no port", `web_listen_addr = "127.0.0.1"`, 1, "web_listen_addr", `must be host:port like "127.0.0.1:7777"`},
		{"web_listen_addr bad port", `web_listen_addr = "127.0.0.1:http"`, 1, "web_listen_addr", "must be host:port"},
		{"web_listen_addr port range", `web_listen_addr = ":70000"`, 1, "web_listen_addr", "must be host:port"},
		{"web_listen_addr all interfaces", `web_listen_addr = ":7777"`, 1, "web_listen_addr", "not a loopback address"},
		{"web_listen_addr lan", "vmm = \"qemu\"\nweb_listen_addr = \"192.168.1.5:7777\"", 2, "web_listen_addr", "set web_allow_remote = true"},
		{"web_listen_addr hostname", `web_listen_addr = "myhost:7777"`, 1, "web_listen_addr", "not a loopback address"},
		{"web_allow_remote type", `web_allow_remote = "yes"`, 1, "web_allow_remote", "web_allow_remote: expected true or false, got string"},
		{"bridge_name too long", `bridge_name = "abcdefghijklmnop"`, 1, "bridge_name", "1-15 characters"},
		{"bridge_name empty", `bridge_name = ""`, 1, "bridge_name", "must be a Linux interface name"},
		{"bridge_name slash", `bridge_name = "br/0"`, 1, "bridge_name", "no '/', ':' or whitespace"},
		{"bridge_name colon", `bridge_name = "br:0"`, 1, "bridge_name", "no '/', ':' or whitespace"},
		{"bridge_name space", `bridge_name = "br 0"`, 1, "bridge_name", "no '/', ':' or whitespace"},
		{"bridge_name type", `bridge_name = 0`, 1, "bridge_name", "bridge_name: expected a string, got integer"},
		{"bridge_ip not an address", `bridge_ip = "172.16.0"`, 1, "bridge_ip", `bridge_ip = "172.16.0": must be an IPv4 address`},
		{"bridge_ip ipv6", `bridge_ip = "fd00::1"`, 1, "bridge_ip", "must be an IPv4 address"},
		{"bridge_ip outside cidr", "cidr = \"172.16.0.0/24\"\nbridge_ip = \"10.0.0.1\"", 2, "bridge_ip", "bridge_ip 10.0.0.1 is outside cidr 172.16.0.0/24"},
		{"bridge_ip outside default cidr", `bridge_ip = "10.0.0.1"`, 1, "bridge_ip", "bridge_ip 10.0.0.1 is outside cidr 172.16.0.0/24"},
		{"bridge_ip network address", `bridge_ip = "172.16.0.0"`, 1, "bridge_ip", "is the network address of cidr 172.16.0.0/24; use a host address like 172.16.0.1"},
		{"bridge_ip broadcast", `bridge_ip = "172.16.0.255"`, 1, "bridge_ip", "is the broadcast address"},
		{"cidr prefix length", "# net\ncidr = \"172.16.0.0/33\"", 2, "cidr", `cidr: "172.16.0.0/33" is not an IPv4 prefix like 172.16.0.0/24`},
		{"cidr garbage", `cidr = "lan"`, 1, "cidr", "is not an IPv4 prefix"},
		{"cidr ipv6", `cidr = "fd00::/64"`, 1, "cidr", "is not an IPv4 prefix"},
		{"cidr too small", `cidr = "10.0.0.0/31"`, 1, "cidr", "must have a prefix length from /8 to /30"},
		{"cidr too big", `cidr = "10.0.0.0/7"`, 1, "cidr", "must have a prefix length from /8 to /30"},
		{"cidr host bits", `cidr = "10.0.0.1/24"`, 1, "cidr", `has host bits set; did you mean "10.0.0.0/24"?`},
		{"cidr excludes default bridge_ip", "bridge_ip = \"172.16.0.1\"\ncidr = \"10.0.0.0/24\"", 1, "bridge_ip", "outside cidr 10.0.0.0/24"},
		{"credential_files type", `credential_files = "~/.claude/.credentials.json"`, 1, "credential_files", "credential_files: expected an array of paths"},
		{"credential_files element type", `credential_files = [1]`, 1, "credential_files", "credential_files[0]: expected a string"},
		{"credential_files relative", `credential_files = [".claude/x"]`, 1, "credential_files", `credential_files[0] = ".claude/x": must be a file path starting with ~/`},
		{"credential_files bare tilde", `credential_files = ["~/"]`, 1, "credential_files", "names your home directory"},
		{"credential_files dotdot", `credential_files = ["~/../other/.netrc"]`, 1, "credential_files", `has a ".." part`},
		{"credential_files root", `credential_files = ["/"]`, 1, "credential_files", "names /"},
		{"credential_files twice", `credential_files = ["~/a", "~/./a"]`, 1, "credential_files", "credential_files[1] = \"~/./a\": listed twice"},
		{"image_max_bytes word", `image_max_bytes = "lots"`, 1, "image_max_bytes", `image_max_bytes = "lots": expected an integer number of bytes or a size like "32G"`},
		{"image_max_bytes tiny", `image_max_bytes = 10`, 1, "image_max_bytes", "image_max_bytes = 10: expected"},
		{"image_max_entries string", `image_max_entries = "x"`, 1, "image_max_entries", "image_max_entries: expected an integer of at least 16"},
		{"console_log_max_mib zero", `console_log_max_mib = 0`, 1, "console_log_max_mib", "console_log_max_mib = 0: must be from 1 to 1024"},
		{"session_log_max_mib zero", `session_log_max_mib = 0`, 1, "session_log_max_mib", "session_log_max_mib = 0: must be from 1 to 4096"},
		{"console_log_max_mib string", `console_log_max_mib = "8M"`, 1, "console_log_max_mib", "expected an integer from 1 to 1024, got string"},
		{"vm_cpus zero", `vm_cpus = 0`, 1, "vm_cpus", "vm_cpus = 0: must be from 1 to 64"},
		{"vm_cpus string", `vm_cpus = "2"`, 1, "vm_cpus", "vm_cpus: expected an integer from 1 to 64, got string"},
		{"warm_start string", `warm_start = "yes"`, 1, "warm_start", `warm_start: expected true or false, got string`},
		{"vm_memory word", `vm_memory = "lots"`, 1, "vm_memory", `vm_memory = "lots": expected a size like "1G"`},
		{"vm_memory tiny", `vm_memory = "64M"`, 1, "vm_memory", `vm_memory = "64M": expected a size like "1G" (binary units`},
		{"vm_memory tiny MiB", `vm_memory = 100`, 1, "vm_memory", "at least 128M)"},
		{"vm_memory negative", `vm_memory = -1`, 1, "vm_memory", "vm_memory = -1: expected"},
		{"vm_memory float", `vm_memory = 1.5`, 1, "vm_memory", "; at least 128M), got float"},
		{"vm_disk tiny", `vm_disk = "1M"`, 1, "vm_disk", `vm_disk = "1M": expected a size like "16G"`},
		{"vm_disk bare unit", `vm_disk = "G"`, 1, "vm_disk", `vm_disk = "G": expected a size like "16G"`},
		{"vm_disk bool", `vm_disk = true`, 1, "vm_disk", "; at least 64M), got boolean"},
		{"tap_pool_size string", `tap_pool_size = "2"`, 1, "tap_pool_size", "tap_pool_size: expected an integer from 0 to 64, got string"},
		{"tap_pool_size float", `tap_pool_size = 2.0`, 1, "tap_pool_size", "expected an integer from 0 to 64, got float"},
		{"tap_pool_size negative", `tap_pool_size = -1`, 1, "tap_pool_size", "tap_pool_size = -1: must be from 0 to 64"},
		{"tap_pool_size too big", `tap_pool_size = 65`, 1, "tap_pool_size", "must be from 0 to 64"},
		{"default_dns string", `default_dns = "1.1.1.1"`, 1, "default_dns", "default_dns: expected an array of IP addresses"},
		{"default_dns element type", `default_dns = [1]`, 1, "default_dns", "default_dns[0]: expected a string holding an IP address, got integer"},
		{"default_dns bad address", `default_dns = ["1.1.1.1", "dns.google"]`, 1, "default_dns", `default_dns[1] = "dns.google": must be an IPv4 or IPv6 address`},
		{"default_dns zone", `default_dns = ["fe80::1%eth0"]`, 1, "default_dns", "must be an IPv4 or IPv6 address"},
		{"debian_mirror scheme", `debian_mirror = "ftp://ftp.debian.org/debian"`, 1, "debian_mirror", "must be an http:// or https:// URL"},
		{"debian_mirror no host", `debian_mirror = "http://"`, 1, "debian_mirror", "must be an http:// or https:// URL"},
		{"debian_mirror not a URL", `debian_mirror = "deb.debian.org/debian"`, 1, "debian_mirror", "must be an http:// or https:// URL"},
		{"debian_keyring relative", `debian_keyring = "ring.gpg"`, 1, "debian_keyring", "must be an absolute path"},
		{"debian_mirror type", `debian_mirror = {url = "http://x"}`, 1, "debian_mirror", "debian_mirror: expected a string, got table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			_, _, err := Load(p)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			prefix := p + ":" + strconv.Itoa(tt.line) + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant prefix %q and %q", err, prefix, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error", err)
			}
			if ce.Key != tt.key || ce.Line != tt.line || ce.File != p {
				t.Errorf("Error{File: %q, Line: %d, Key: %q}, want {%q, %d, %q}", ce.File, ce.Line, ce.Key, p, tt.line, tt.key)
			}
		})
	}
}

func TestLoadSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // file-relative "line:col: " prefix plus a fragment
	}{
		{"missing value", "vmm = \"qemu\"\ncidr =\n", `2:7: invalid TOML: `},
		{"unterminated string", "\n\nvmm = \"qemu\n", `3:`},
		{"duplicate key", "vmm = \"qemu\"\nvmm = \"auto\"\n", `2:1: invalid TOML: key vmm is already defined`},
		{"no equals", "vmm\n", `1:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			_, _, err := Load(p)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), p+":"+tt.want) {
				t.Errorf("error = %q, want prefix %q", err, p+":"+tt.want)
			}
		})
	}
}

func TestLoadCollectsAllErrors(t *testing.T) {
	p := writeConfig(t, "vmm = \"kvm\"\n# comment\ncidrr = \"x\"\ncidr = \"172.16.0.0/33\"\ntap_pool_size = \"2\"\n")
	_, _, err := Load(p)
	if err == nil {
		t.Fatal("Load succeeded, want errors")
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("%T is not a *config.Error", e)
		}
		got = append(got, strconv.Itoa(ce.Line)+" "+ce.Key)
	}
	want := []string{"1 vmm", "3 cidrr", "4 cidr", "5 tap_pool_size"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s\nfull error:\n%v", diff, err)
	}
}

func TestLoadUnreadable(t *testing.T) {
	if _, _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("Load(dir) error = %v, want a reading config error", err)
	}
}
