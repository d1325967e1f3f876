package prereq

import "testing"

func TestStrict(t *testing.T) {
	for _, c := range []struct {
		ci, e2e string
		want    bool
	}{
		{"", "", false}, {"false", "", false}, {"0", "", false},
		{"true", "", true}, {"1", "", true}, {"", "1", true}, {"", "0", false},
	} {
		t.Setenv("CI", c.ci)
		t.Setenv("BANGER_E2E", c.e2e)
		if got := Strict(); got != c.want {
			t.Errorf("CI=%q BANGER_E2E=%q: Strict() = %v, want %v", c.ci, c.e2e, got, c.want)
		}
	}
}

// fakeT records how a test ended without ending the real one.
type fakeT struct {
	testing.TB
	fatal, skip string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatalf(format string, args ...any) { f.fatal = format }
func (f *fakeT) Skipf(format string, args ...any)  { f.skip = format }

func TestMissingFailsWhenStrict(t *testing.T) {
	t.Setenv("CI", "true")
	f := &fakeT{}
	Missing(f, "qemu (apt-get install qemu-system-x86)")
	if f.fatal == "" || f.skip != "" {
		t.Fatalf("under CI Missing skipped: %+v", f)
	}
	t.Setenv("CI", "")
	t.Setenv("BANGER_E2E", "")
	f = &fakeT{}
	Missing(f, "qemu")
	if f.skip == "" || f.fatal != "" {
		t.Fatalf("outside CI Missing failed: %+v", f)
	}
}
