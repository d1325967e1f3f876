package web

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"strings"
	"testing"
)

// The vendored xterm.js files are exactly the ones make web-assets
// fetched and checked: every file under vendor/xterm is listed in
// SHA256SUMS with the sum it has, and every listed file is there.
func TestVendoredAssetsMatchSums(t *testing.T) {
	const dir = "assets/vendor/xterm"
	sums, err := assets.ReadFile(dir + "/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(sums)))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want \"<sum>  <file>\"", sc.Text())
		}
		want[name] = sum
	}
	entries, err := fs.ReadDir(assets, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "SHA256SUMS" {
			continue
		}
		b, err := assets.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		got := hex.EncodeToString(sum[:])
		switch w, ok := want[e.Name()]; {
		case !ok:
			t.Errorf("%s is not in SHA256SUMS (run make web-assets)", e.Name())
		case w != got:
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s (run make web-assets)", e.Name(), got, w)
		}
		delete(want, e.Name())
	}
	for name := range want {
		t.Errorf("%s is in SHA256SUMS but not vendored (run make web-assets)", name)
	}
}
