package config

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// VMM settings accepted by the vmm key.
const (
	VMMAuto        = "auto"
	VMMFirecracker = "firecracker"
	VMMQEMU        = "qemu"
)

// Config is the effective configuration: the defaults overlaid with
// config.toml. The network keys are parsed into netip types.
type Config struct {
	// DefaultImageName is the image `vm run` and `vm create` use when none
	// is given.
	DefaultImageName string `toml:"default_image_name" json:"default_image_name"`
	// SSHKeyPath is the private key banger uses to reach guests. Empty means
	// banger creates <config dir>/ssh/id_ed25519; see SSHKey.
	SSHKeyPath string `toml:"ssh_key_path" json:"ssh_key_path"`
	// FirecrackerBin is the firecracker binary, a path or a name looked up
	// in PATH.
	FirecrackerBin string `toml:"firecracker_bin" json:"firecracker_bin"`
	// JailerBin is Firecracker's jailer; empty runs firecracker without it.
	JailerBin string `toml:"jailer_bin" json:"jailer_bin"`
	// VMM is one of VMMAuto, VMMFirecracker, VMMQEMU.
	VMM string `toml:"vmm" json:"vmm"`
	// QEMUBin is the qemu-system-x86_64 binary, a path or a name in PATH.
	QEMUBin string `toml:"qemu_bin" json:"qemu_bin"`
	// WebListenAddr is the host:port of the web UI; empty disables it.
	WebListenAddr string `toml:"web_listen_addr" json:"web_listen_addr"`
	// WebAllowRemote lets web_listen_addr be a non-loopback address. The
	// UI has no login: anyone who reaches it drives the VMs.
	WebAllowRemote bool `toml:"web_allow_remote" json:"web_allow_remote"`
	// BridgeName is the host bridge the VMs' taps join.
	BridgeName string `toml:"bridge_name" json:"bridge_name"`
	// BridgeIP is the host's address on the bridge, inside CIDR. When only
	// cidr is set it defaults to the first host address of CIDR.
	BridgeIP netip.Addr `toml:"bridge_ip" json:"bridge_ip"`
	// CIDR is the IPv4 network VMs get their addresses from.
	CIDR netip.Prefix `toml:"cidr" json:"cidr"`
	// TapPoolSize is how many taps the daemon keeps ready (0..64).
	TapPoolSize int `toml:"tap_pool_size" json:"tap_pool_size"`
	// DefaultDNS are the guests' resolvers; empty means the host's.
	DefaultDNS []netip.Addr `toml:"default_dns" json:"default_dns"`
	// DebianMirror is the http(s) Debian mirror for kernels and images;
	// empty means the one in the host's apt sources.
	DebianMirror string `toml:"debian_mirror" json:"debian_mirror"`
	// ImageMaxBytes caps the file data one image pull may unpack (a
	// decompression bomb stops there); ImageMaxEntries caps its entries.
	ImageMaxBytes   int64 `toml:"image_max_bytes" json:"image_max_bytes"`
	ImageMaxEntries int64 `toml:"image_max_entries" json:"image_max_entries"`
	// ConsoleLogMaxMiB caps each VM's console log (console.log plus its
	// older half console.log.1), in MiB.
	ConsoleLogMaxMiB int `toml:"console_log_max_mib" json:"console_log_max_mib"`
	// SessionLogMaxMiB caps the host's copy of each output stream (stdout,
	// stderr) of each session, in MiB; the guest keeps all of it.
	SessionLogMaxMiB int `toml:"session_log_max_mib" json:"session_log_max_mib"`
	// DebianKeyring is the binary OpenPGP keyring a kernel pull checks the
	// mirror's InRelease against; empty means Debian's archive keyring.
	DebianKeyring string `toml:"debian_keyring" json:"debian_keyring"`
	// VMCPUs, VMMemoryMiB and VMDiskBytes are what a VM gets when vm
	// create or vm run give no --cpus, --memory or --disk. The root disk
	// is a sparse file: it costs only what the guest writes. An image
	// larger than VMDiskBytes keeps its own size.
	VMCPUs      int   `toml:"vm_cpus" json:"vm_cpus"`
	VMMemoryMiB int   `toml:"vm_memory" json:"vm_memory"`
	VMDiskBytes int64 `toml:"vm_disk" json:"vm_disk"`
	// CredentialFiles are host files copied into every VM at start, as
	// written: "~/P" (in the invoking user's home) or absolute; see
	// Credentials for where each lands in the guest.
	CredentialFiles []string `toml:"credential_files" json:"credential_files"`
	// WarmStart keeps a ready memory snapshot of each image after its
	// first boot and restores later VMs of it from that snapshot.
	WarmStart bool `toml:"warm_start" json:"warm_start"`
}

// Default returns the configuration used when config.toml sets nothing.
func Default() Config {
	return Config{
		DefaultImageName: "debian-bookworm",
		FirecrackerBin:   "firecracker",
		VMM:              VMMAuto,
		QEMUBin:          "qemu-system-x86_64",
		WebListenAddr:    "127.0.0.1:7777",
		BridgeName:       "banger0",
		BridgeIP:         netip.MustParseAddr("172.16.0.1"),
		CIDR:             netip.MustParsePrefix("172.16.0.0/24"),
		TapPoolSize:      2,
		ImageMaxBytes:    32 << 30,
		ImageMaxEntries:  4 << 20,
		ConsoleLogMaxMiB: 8,
		SessionLogMaxMiB: 16,
		VMCPUs:           2,
		VMMemoryMiB:      1024,
		VMDiskBytes:      16 << 30,
		CredentialFiles:  slices.Clone(DefaultCredentialFiles),
		WarmStart:        true,
	}
}

// SSHKey returns the private key path to use: SSHKeyPath when set, else
// ssh/id_ed25519 under the config directory.
func (c Config) SSHKey(d Dirs) string {
	if c.SSHKeyPath != "" {
		return c.SSHKeyPath
	}
	return filepath.Join(d.Config, "ssh", "id_ed25519")
}

// expandHome replaces a leading "~/" with the invoking user's home.
func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return filepath.Join(userHome(), rest)
	}
	return p
}
