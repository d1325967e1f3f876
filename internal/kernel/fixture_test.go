package kernel

import (
	"banger/internal/prereq"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fixturesDir is where the real Debian data the tests use is cached.
func fixturesDir() string {
	if d := os.Getenv("BANGER_FIXTURES"); d != "" {
		return d
	}
	return "/var/tmp/banger-fixtures"
}

var (
	fixtureOnce sync.Once
	fixtureDeb  string
	fixtureErr  error
)

// realDeb returns the real linux-image-*-cloud-amd64 .deb, fetched (and
// verified) once into the fixtures dir with the package's own code. It
// skips the test when the package cannot be had (offline, no keyring).
func realDeb(t *testing.T) string {
	t.Helper()
	fixtureOnce.Do(func() {
		for _, pat := range []string{"linux-image-*-cloud-amd64_*.deb", "debian/pool/linux-image-*-cloud-amd64_*.deb"} {
			if m, _ := filepath.Glob(filepath.Join(fixturesDir(), pat)); len(m) > 0 {
				fixtureDeb = m[len(m)-1]
				return
			}
		}
		if _, err := os.Stat(DebianKeyring); err != nil {
			fixtureErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s := &Store{CacheDir: fixturesDir()}
		src, err := s.findDebianKernel(ctx, DefaultMirror, Catalog["generic-6.1"], DebianKeyring, nil)
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureDeb, fixtureErr = s.fetchDeb(ctx, src, nil)
	})
	if fixtureErr != nil {
		prereq.Missing(t, "no Debian kernel package fixture (offline?): %v", fixtureErr)
	}
	return fixtureDeb
}

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// realAgent builds the static banger-agent once per test run.
func realAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-agent-test-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin = filepath.Join(dir, "banger-agent")
		cmd := exec.Command("go", "build", "-o", agentBin, "banger/cmd/banger-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatalf("building banger-agent: %v", agentErr)
	}
	return agentBin
}

var (
	extractOnce sync.Once
	extracted   debContents
	extractErr  error
	extractDir  string
)

// extractedDeb returns the real package, extracted once per test run.
func extractedDeb(t *testing.T) debContents {
	t.Helper()
	deb := realDeb(t)
	extractOnce.Do(func() {
		extractDir, extractErr = os.MkdirTemp("", "banger-deb-test-")
		if extractErr == nil {
			extracted, extractErr = extractDeb(context.Background(), deb, extractDir)
		}
	})
	if extractErr != nil {
		t.Fatalf("extracting %s: %v", deb, extractErr)
	}
	return extracted
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin != "" {
		os.RemoveAll(filepath.Dir(agentBin))
	}
	for _, d := range extraCleanup {
		os.RemoveAll(d)
	}
	if extractDir != "" {
		os.RemoveAll(extractDir)
	}
	os.Exit(code)
}

// extraCleanup lists temp dirs shared across tests, removed by TestMain.
var extraCleanup []string
