package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"512", 512 << 20},
		{"512M", 512 << 20},
		{"512m", 512 << 20},
		{"512MB", 512 << 20},
		{"512MiB", 512 << 20},
		{"512mib", 512 << 20},
		{" 2G ", 2 << 30},
		{"2gb", 2 << 30},
		{"1.5G", 1536 << 20},
		{"1.2GiB", 1288490188}, // as image's "try --size" hint prints it
		{"64K", 64 << 10},
		{"64KiB", 64 << 10},
		{"1T", 1 << 40},
		{"0.5", 512 << 10},
		{"1.", 1 << 20},
		{".5G", 512 << 20},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeBadInput(t *testing.T) {
	for _, in := range []string{
		"", " ", "M", "GiB", "B", "iB", "lots", "12X", "12 M", "12MM", "12iB", "12MIBB",
		"-1G", "+1G", "0", "0M", "0.0000001K", "1e3", "0x10", "1.2.3G", "inf", "NaN", ".",
		"9999999T", "4194304T",
	} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
		} else if !strings.Contains(err.Error(), "size") {
			t.Errorf("ParseSize(%q): error %q does not say what a size is", in, err)
		}
	}
}

// FormatSize writes what ParseSize reads back to the same size.
func TestFormatSizeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{16 << 30, "16G"}, {1536 << 20, "1536M"}, {1 << 40, "1T"}, {3 << 10, "3K"},
	} {
		got := FormatSize(tc.in)
		if got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
		if back, err := ParseSize(got); err != nil || back != tc.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", got, back, err, tc.in)
		}
	}
	if got := FormatSize(1000); got != "1000 bytes" {
		t.Errorf("FormatSize(1000) = %q", got)
	}
}
