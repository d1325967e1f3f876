package main

import (
	"strings"
	"testing"
)

// Wrong input to build-catalog fails before any work and says what is
// valid; flags may come before or after the name.
func TestBuildCatalogBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nope", "-o", "x.tar.zst"}, `unknown catalog image "nope" (valid: debian-bookworm`},
		{[]string{"-o", "x.tar.zst", "nope"}, `unknown catalog image "nope"`},
		{[]string{"debian-bookworm"}, "-o is required"},
		{[]string{}, "usage: bangerd build-catalog NAME"},
		{[]string{"a", "b", "-o", "x"}, "usage: bangerd build-catalog NAME"},
		{[]string{"debian-bookworm", "-o", "x", "--agent", "/nonexistent/banger-agent"}, "--agent:"},
	} {
		var stdout, stderr strings.Builder
		if code := buildCatalog(tc.args, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("build-catalog %q: exit %d, stderr %q; want non-zero and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
