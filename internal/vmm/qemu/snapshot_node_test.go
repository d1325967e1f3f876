package qemu

import "testing"

// A frozen drive's node is named after its overlay file: unique in a
// QEMU whichever daemon froze it, and a valid QEMU node name.
func TestFrozenNode(t *testing.T) {
	for _, tc := range []struct{ overlay, want string }{
		{"/s/layers/9fcfbbd9f740be41.qcow2", "frozen-9fcfbbd9f740be41"},
		{"/s/layers/a.b c.qcow2", "frozen-a_b_c"},
		{"/s/layers/0123456789abcdef0123456789.qcow2", "frozen-0123456789abcdef01234567"},
	} {
		got := frozenNode(tc.overlay)
		if got != tc.want || len(got) > 31 {
			t.Errorf("frozenNode(%q) = %q, want %q (31 characters at most)", tc.overlay, got, tc.want)
		}
	}
}
