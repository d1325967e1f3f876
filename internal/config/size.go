package config

import (
	"fmt"
	"strconv"
	"strings"
)

// SizeRule is the one rule for sizes, in flags and in config.toml, worded
// for --help texts.
const SizeRule = "binary units K, M, G, T (iB or B may follow, any case); a bare number is MiB"

// ParseSize reads a size such as 512, 512M, 1.5G, 2GiB or 4gb and returns
// it in bytes. Units are binary: K, M, G and T, optionally followed by
// "iB" or "B" and in any case, are KiB, MiB, GiB and TiB. A bare number
// is MiB, as in --memory 512. The size must be positive and below 4 EiB.
func ParseSize(s string) (int64, error) {
	num, unit := splitUnit(strings.TrimSpace(s))
	shift, ok := map[string]uint{"K": 10, "M": 20, "G": 30, "T": 40}[unit]
	if !ok {
		return 0, fmt.Errorf("%q is not a size like 512M or 2G (%s)", s, SizeRule)
	}
	// Digits and at most one dot only: no sign, exponent, "inf" or "0x".
	if num == "" || strings.Trim(num, "0123456789.") != "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("%q is not a size like 512M or 2G (%s)", s, SizeRule)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size like 512M or 2G (%s)", s, SizeRule)
	}
	b := v * float64(int64(1)<<shift)
	if b < 1 || b >= 1<<62 {
		return 0, fmt.Errorf("%q is out of range: a size must be at least 1 byte and less than 4 EiB", s)
	}
	return int64(b), nil
}

// splitUnit splits "1.5GiB" into "1.5" and "G"; a bare number gets "M".
func splitUnit(s string) (num, unit string) {
	u := strings.ToUpper(s)
	for _, suffix := range []string{"IB", "B"} {
		if t, ok := strings.CutSuffix(u, suffix); ok && t != "" && strings.ContainsAny(t[len(t)-1:], "KMGT") {
			u = t
			break
		}
	}
	if u != "" && strings.ContainsAny(u[len(u)-1:], "KMGT") {
		return u[:len(u)-1], u[len(u)-1:]
	}
	if u != "" && strings.ContainsAny(u[len(u)-1:], "0123456789.") {
		return u, "M"
	}
	return u, ""
}

// FormatSize writes b the way ParseSize reads it back: whole TiB, GiB,
// MiB or KiB ("16G", "1536M"); a size of no whole KiB is said in bytes.
func FormatSize(b int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if b != 0 && b%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", b>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", b)
}
