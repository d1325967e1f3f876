package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// key describes one config.toml key: how to apply a decoded TOML value to a
// Config and how to read the effective value back.
type key struct {
	name string
	// apply checks v (as decoded by go-toml: string, int64, float64, bool,
	// []any, map[string]any or a date/time) and stores it in c. Its error
	// message starts with the key name.
	apply func(c *Config, v any) error
	// value returns the effective value in a JSON- and TOML-friendly form.
	value func(c Config) any
}

// keys lists every valid key, sorted by name.
var keys = []key{
	{"bridge_ip", applyBridgeIP, func(c Config) any { return c.BridgeIP.String() }},
	{"bridge_name", applyBridgeName, func(c Config) any { return c.BridgeName }},
	{"cidr", applyCIDR, func(c Config) any { return c.CIDR.String() }},
	{"console_log_max_mib", applyConsoleLogMax, func(c Config) any { return c.ConsoleLogMaxMiB }},
	{"credential_files", applyCredentialFiles, func(c Config) any { return slices.Clone(c.CredentialFiles) }},
	{"debian_keyring", applyDebianKeyring, func(c Config) any { return c.DebianKeyring }},
	{"debian_mirror", applyDebianMirror, func(c Config) any { return c.DebianMirror }},
	{"default_dns", applyDefaultDNS, func(c Config) any { return dnsStrings(c.DefaultDNS) }},
	{"default_image_name", applyDefaultImageName, func(c Config) any { return c.DefaultImageName }},
	{"firecracker_bin", binary("firecracker_bin", false, func(c *Config) *string { return &c.FirecrackerBin }),
		func(c Config) any { return c.FirecrackerBin }},
	{"image_max_bytes", applyImageMaxBytes, func(c Config) any { return c.ImageMaxBytes }},
	{"image_max_entries", applyImageMaxEntries, func(c Config) any { return c.ImageMaxEntries }},
	{"jailer_bin", binary("jailer_bin", true, func(c *Config) *string { return &c.JailerBin }),
		func(c Config) any { return c.JailerBin }},
	{"qemu_bin", binary("qemu_bin", false, func(c *Config) *string { return &c.QEMUBin }),
		func(c Config) any { return c.QEMUBin }},
	{"session_log_max_mib", applySessionLogMax, func(c Config) any { return c.SessionLogMaxMiB }},
	{"ssh_key_path", applySSHKeyPath, func(c Config) any { return c.SSHKeyPath }},
	{"tap_pool_size", applyTapPoolSize, func(c Config) any { return c.TapPoolSize }},
	{"vm_cpus", applyVMCPUs, func(c Config) any { return c.VMCPUs }},
	{"vm_disk", applyVMDisk, func(c Config) any { return FormatSize(c.VMDiskBytes) }},
	{"vm_memory", applyVMMemory, func(c Config) any { return FormatSize(int64(c.VMMemoryMiB) << 20) }},
	{"vmm", applyVMM, func(c Config) any { return c.VMM }},
	{"warm_start", applyWarmStart, func(c Config) any { return c.WarmStart }},
	{"web_allow_remote", applyWebAllowRemote, func(c Config) any { return c.WebAllowRemote }},
	{"web_listen_addr", applyWebListenAddr, func(c Config) any { return c.WebListenAddr }},
}

// Keys returns the valid config.toml keys, sorted.
func Keys() []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return names
}

func lookupKey(name string) (key, bool) {
	i := slices.IndexFunc(keys, func(k key) bool { return k.name == name })
	if i < 0 {
		return key{}, false
	}
	return keys[i], true
}

// MaxTapPoolSize is the largest tap_pool_size accepted.
const MaxTapPoolSize = 64

func applyDefaultImageName(c *Config, v any) error {
	s, err := asString("default_image_name", v)
	if err != nil {
		return err
	}
	if s == "" || strings.ContainsFunc(s, isSpaceOrSlash) {
		return fmt.Errorf("default_image_name = %q: must be a non-empty image name without spaces or '/', like \"debian-bookworm\"", s)
	}
	c.DefaultImageName = s
	return nil
}

func applySSHKeyPath(c *Config, v any) error {
	s, err := asString("ssh_key_path", v)
	if err != nil {
		return err
	}
	if s != "" {
		s = expandHome(s)
		if !filepath.IsAbs(s) {
			return fmt.Errorf("ssh_key_path = %q: must be an absolute path or start with ~/ (or \"\" to let banger create one)", s)
		}
	}
	c.SSHKeyPath = s
	return nil
}

// binary applies a key naming an executable: a path or a name in PATH.
func binary(name string, optional bool, field func(*Config) *string) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := asString(name, v)
		if err != nil {
			return err
		}
		if s == "" && !optional {
			return fmt.Errorf("%s = \"\": must name a binary, as a path or a name looked up in PATH", name)
		}
		s = expandHome(s)
		if strings.ContainsRune(s, '/') && !filepath.IsAbs(s) {
			return fmt.Errorf("%s = %q: must be an absolute path or a bare name looked up in PATH", name, s)
		}
		*field(c) = s
		return nil
	}
}

var vmmValues = []string{VMMAuto, VMMFirecracker, VMMQEMU}

func applyVMM(c *Config, v any) error {
	s, err := asString("vmm", v)
	if err != nil {
		return err
	}
	if !slices.Contains(vmmValues, s) {
		return fmt.Errorf("vmm = %q: must be one of %s", s, strings.Join(vmmValues, ", "))
	}
	c.VMM = s
	return nil
}

func applyWebListenAddr(c *Config, v any) error {
	s, err := asString("web_listen_addr", v)
	if err != nil {
		return err
	}
	if s != "" {
		_, port, err := net.SplitHostPort(s)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			return fmt.Errorf("web_listen_addr = %q: must be host:port like \"127.0.0.1:7777\", or \"\" to disable the web UI", s)
		}
	}
	c.WebListenAddr = s
	return nil
}

func applyWebAllowRemote(c *Config, v any) error {
	b, ok := v.(bool)
	if !ok {
		return fmt.Errorf("web_allow_remote: expected true or false, got %s", tomlType(v))
	}
	c.WebAllowRemote = b
	return nil
}

// WebLoopback reports whether addr (host:port) listens on loopback only:
// a loopback IP or "localhost". An empty host means every interface.
func WebLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkWeb refuses a web UI reachable from other hosts unless asked for:
// the UI has no login.
func checkWeb(c Config) error {
	if c.WebListenAddr == "" || c.WebAllowRemote || WebLoopback(c.WebListenAddr) {
		return nil
	}
	return fmt.Errorf("web_listen_addr = %q is not a loopback address: the web UI has no login, so anyone who reaches it drives your VMs; "+
		"use 127.0.0.1:PORT, or set web_allow_remote = true if you mean it", c.WebListenAddr)
}

// maxIfname is IFNAMSIZ-1: the longest Linux interface name.
const maxIfname = 15

func applyBridgeName(c *Config, v any) error {
	s, err := asString("bridge_name", v)
	if err != nil {
		return err
	}
	if s == "" || len(s) > maxIfname || s == "." || s == ".." ||
		strings.ContainsFunc(s, func(r rune) bool { return isSpaceOrSlash(r) || r == ':' }) {
		return fmt.Errorf("bridge_name = %q: must be a Linux interface name: 1-%d characters, no '/', ':' or whitespace, like \"banger0\"", s, maxIfname)
	}
	c.BridgeName = s
	return nil
}

func applyBridgeIP(c *Config, v any) error {
	s, err := asString("bridge_ip", v)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return fmt.Errorf("bridge_ip = %q: must be an IPv4 address like 172.16.0.1", s)
	}
	c.BridgeIP = a
	return nil
}

// Bounds of the cidr prefix length: /30 leaves two host addresses (the
// bridge and one VM); /8 is already far more than a host can run.
const (
	minCIDRBits = 8
	maxCIDRBits = 30
)

func applyCIDR(c *Config, v any) error {
	s, err := asString("cidr", v)
	if err != nil {
		return err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("cidr: %q is not an IPv4 prefix like 172.16.0.0/24", s)
	}
	if p.Bits() < minCIDRBits || p.Bits() > maxCIDRBits {
		return fmt.Errorf("cidr: %q must have a prefix length from /%d to /%d", s, minCIDRBits, maxCIDRBits)
	}
	if p.Masked() != p {
		return fmt.Errorf("cidr: %q has host bits set; did you mean %q?", s, p.Masked().String())
	}
	c.CIDR = p
	return nil
}

// MaxConsoleLogMiB is the largest console_log_max_mib accepted.
const MaxConsoleLogMiB = 1024

func applyConsoleLogMax(c *Config, v any) (err error) {
	c.ConsoleLogMaxMiB, err = intIn("console_log_max_mib", v, 1, MaxConsoleLogMiB)
	return err
}

// MaxSessionLogMiB is the largest session_log_max_mib accepted.
const MaxSessionLogMiB = 4096

func applySessionLogMax(c *Config, v any) (err error) {
	c.SessionLogMaxMiB, err = intIn("session_log_max_mib", v, 1, MaxSessionLogMiB)
	return err
}

func applyTapPoolSize(c *Config, v any) (err error) {
	c.TapPoolSize, err = intIn("tap_pool_size", v, 0, MaxTapPoolSize)
	return err
}

func applyWarmStart(c *Config, v any) error {
	b, ok := v.(bool)
	if !ok {
		return fmt.Errorf("warm_start: expected true or false, got %s", tomlType(v))
	}
	c.WarmStart = b
	return nil
}

// intIn is the value of key, a TOML integer from lo to hi.
func intIn(key string, v any, lo, hi int64) (int, error) {
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%s: expected an integer from %d to %d, got %s", key, lo, hi, tomlType(v))
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%s = %d: must be from %d to %d", key, n, lo, hi)
	}
	return int(n), nil
}

func applyDefaultDNS(c *Config, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("default_dns: expected an array of IP addresses like [\"1.1.1.1\", \"2606:4700:4700::1111\"], got %s", tomlType(v))
	}
	addrs := make([]netip.Addr, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return fmt.Errorf("default_dns[%d]: expected a string holding an IP address, got %s", i, tomlType(e))
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("default_dns[%d] = %q: must be an IPv4 or IPv6 address like \"1.1.1.1\"", i, s)
		}
		addrs = append(addrs, a)
	}
	c.DefaultDNS = addrs
	return nil
}

func applyDebianMirror(c *Config, v any) error {
	s, err := asString("debian_mirror", v)
	if err != nil {
		return err
	}
	if s != "" {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("debian_mirror = %q: must be an http:// or https:// URL like \"http://deb.debian.org/debian\", or \"\" to use the host's apt sources", s)
		}
	}
	c.DebianMirror = s
	return nil
}

func applyDebianKeyring(c *Config, v any) error {
	s, err := asString("debian_keyring", v)
	if err != nil {
		return err
	}
	if s != "" && !filepath.IsAbs(s) {
		return fmt.Errorf("debian_keyring = %q: must be an absolute path to a binary OpenPGP keyring (like /usr/share/keyrings/debian-archive-keyring.gpg), or \"\" for Debian's", s)
	}
	c.DebianKeyring = s
	return nil
}

// checkNetwork checks the keys that depend on each other.
func checkNetwork(c Config) error {
	if !c.CIDR.Contains(c.BridgeIP) {
		return fmt.Errorf("bridge_ip %s is outside cidr %s", c.BridgeIP, c.CIDR)
	}
	if c.BridgeIP == c.CIDR.Addr() {
		return fmt.Errorf("bridge_ip %s is the network address of cidr %s; use a host address like %s",
			c.BridgeIP, c.CIDR, c.CIDR.Addr().Next())
	}
	if c.BridgeIP == lastAddr(c.CIDR) {
		return fmt.Errorf("bridge_ip %s is the broadcast address of cidr %s; use a host address like %s",
			c.BridgeIP, c.CIDR, c.CIDR.Addr().Next())
	}
	return nil
}

// lastAddr returns the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}

func asString(name string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: expected a string, got %s", name, tomlType(v))
	}
	return s, nil
}

// tomlType names the TOML type of a value decoded by go-toml.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	case time.Time:
		return "datetime"
	default:
		return "date/time"
	}
}

func isSpaceOrSlash(r rune) bool {
	return r == '/' || unicode.IsSpace(r)
}

func dnsStrings(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// applyImageMaxBytes takes an integer number of bytes or a size string
// read by ParseSize: "512M", "32G", "1T".
func applyImageMaxBytes(c *Config, v any) error {
	const hint = `an integer number of bytes or a size like "32G" (` + SizeRule + `; at least 1M)`
	var n int64
	switch v := v.(type) {
	case int64:
		n = v
	case string:
		var err error
		if n, err = ParseSize(v); err != nil {
			return fmt.Errorf("image_max_bytes = %q: expected %s", v, hint)
		}
	default:
		return fmt.Errorf("image_max_bytes: expected %s, got %s", hint, tomlType(v))
	}
	if n < 1<<20 {
		return fmt.Errorf("image_max_bytes = %d: expected %s", n, hint)
	}
	c.ImageMaxBytes = n
	return nil
}

func applyImageMaxEntries(c *Config, v any) error {
	n, ok := v.(int64)
	if !ok || n < 16 {
		return fmt.Errorf("image_max_entries: expected an integer of at least 16, got %v", v)
	}
	c.ImageMaxEntries = n
	return nil
}

// Bounds of the VM defaults: what vm create accepts for --cpus and
// --memory, and a disk that can hold a filesystem at all.
const (
	MaxVMCPUs      = 64
	MinVMMemoryMiB = 128
	MinVMDisk      = 64 << 20
)

func applyVMCPUs(c *Config, v any) (err error) {
	c.VMCPUs, err = intIn("vm_cpus", v, 1, MaxVMCPUs)
	return err
}

func applyVMMemory(c *Config, v any) error {
	n, err := vmSize("vm_memory", v, MinVMMemoryMiB<<20, "1G")
	c.VMMemoryMiB = int(n >> 20)
	return err
}

func applyVMDisk(c *Config, v any) error {
	n, err := vmSize("vm_disk", v, MinVMDisk, "16G")
	c.VMDiskBytes = n
	return err
}

// vmSize reads a VM size key: a size string read by ParseSize, or an
// integer number of MiB (as a bare number in ParseSize), at least lo
// bytes and rounded down to whole MiB.
func vmSize(key string, v any, lo int64, example string) (int64, error) {
	hint := fmt.Sprintf("a size like %q (%s; at least %s)", example, SizeRule, FormatSize(lo))
	var n int64
	switch v := v.(type) {
	case int64:
		if v < 0 || v > 1<<42 {
			return 0, fmt.Errorf("%s = %d: expected %s", key, v, hint)
		}
		n = v << 20
	case string:
		var err error
		if n, err = ParseSize(v); err != nil {
			return 0, fmt.Errorf("%s = %q: expected %s", key, v, hint)
		}
	default:
		return 0, fmt.Errorf("%s: expected %s, got %s", key, hint, tomlType(v))
	}
	if n < lo {
		return 0, fmt.Errorf("%s = %s: expected %s", key, tomlValue(v), hint)
	}
	return n &^ (1<<20 - 1), nil
}
