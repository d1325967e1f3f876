// Package prereq decides what a test does when something it needs is not
// on the machine. On a developer's machine it skips with the reason; in CI
// (CI set) or in an end-to-end run (BANGER_E2E=1) every prerequisite is
// meant to be there, so a missing one fails the test and says what to
// install. Skips that are part of the design (an opt-in benchmark, a
// helper process, a host that cannot have the condition) go through
// ByDesign, whose reasons carry a prefix the skip summary counts apart.
package prereq

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// ByDesignPrefix starts the message of every skip made through ByDesign;
// scripts/skipsummary counts the other skips as unexpected.
const ByDesignPrefix = "by design: "

// Strict reports whether a missing prerequisite must fail the test: in CI
// (CI set to anything but "", "0" or "false") or when BANGER_E2E=1.
func Strict() bool {
	ci := strings.ToLower(os.Getenv("CI"))
	return (ci != "" && ci != "0" && ci != "false") || os.Getenv("BANGER_E2E") == "1"
}

// Missing stops the test because a prerequisite is absent: t.Fatalf when
// Strict, t.Skipf otherwise. The message should name what to install.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("missing prerequisite (CI or BANGER_E2E=1 runs every test): %s", msg)
		return
	}
	t.Skipf("missing prerequisite: %s", msg)
}

// ByDesign skips the test for a reason that is not a gap: it is opt-in
// (BANGER_SOAK, -short), a helper process, or this host cannot have the
// condition the test checks.
func ByDesign(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skipf(ByDesignPrefix+format, args...)
}
