package crashpoint

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/prereq"
)

// helperEnv, when set, makes this test binary a child that hits points.
const helperEnv = "CRASHPOINT_TEST_CHILD"

// TestMain lets a test re-run this binary as a child that hits the
// points BANGER_CRASH_AT may name, then exits 0 if it is still alive.
func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		for _, f := range strings.Split(spec, ",") {
			Hit(Point(f))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child runs this test binary hitting points (comma-separated) with
// BANGER_CRASH_AT=crashAt, and returns how it ended.
func child(t *testing.T, points, crashAt string) (*os.ProcessState, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+points, EnvVar+"="+crashAt)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState, string(out)
}

func killed(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func joined(ps []Point) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

// Every point is listed once, and named op.step.
func TestPointsListed(t *testing.T) {
	seen := map[Point]bool{}
	for _, p := range All {
		if seen[p] {
			t.Errorf("%s is listed twice", p)
		}
		seen[p] = true
		if strings.Count(string(p), ".") < 2 || strings.ContainsAny(string(p), ",@ ") {
			t.Errorf("%q: want operation.step names without ',', '@' or spaces", p)
		}
	}
}

// A build without the bangercrash tag ignores BANGER_CRASH_AT: a child
// told to die at every point passes them all and lives.
func TestNormalBuildIgnoresCrashAt(t *testing.T) {
	if Enabled {
		prereq.ByDesign(t, "built with -tags bangercrash: TestCrashBuildKills covers this build")
	}
	ps, out := child(t, joined(All), joined(All))
	if !ps.Success() {
		t.Fatalf("child hitting every point with %s set to all of them: %v\n%s", EnvVar, ps, out)
	}
}

// A release binary has no trace of the crash code: bangerd built as make
// build builds it contains no string of hit_on.go.
func TestReleaseBinaryHasNoCrashCode(t *testing.T) {
	if testing.Short() {
		prereq.ByDesign(t, "builds bangerd; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "bangerd")
	cmd := exec.Command("go", "build", "-o", bin, "banger/cmd/bangerd")
	cmd.Env = append(os.Environ(), "GOFLAGS=") // no -tags from the environment
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build bangerd: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"crashpoint: killed at", "is no crash point"} {
		if strings.Contains(string(b), s) {
			t.Errorf("release bangerd contains %q: the crash code is compiled in", s)
		}
	}
}

// A release banger-agent has no hostile modes (internal/agent's
// hostile_on.go, bangercrash builds only).
func TestReleaseAgentHasNoHostileModes(t *testing.T) {
	if testing.Short() {
		prereq.ByDesign(t, "builds banger-agent; skipped with -short")
	}
	for _, tags := range []string{"", "bangercrash"} {
		bin := filepath.Join(t.TempDir(), "banger-agent")
		cmd := exec.Command("go", "build", "-tags", tags, "-o", bin, "banger/cmd/banger-agent")
		cmd.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build banger-agent (tags %q): %v\n%s", tags, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Contains(string(b), "hostile mode"), tags != ""; got != want {
			t.Errorf("banger-agent built with tags %q: has the hostile modes %v, want %v", tags, got, want)
		}
	}
}
