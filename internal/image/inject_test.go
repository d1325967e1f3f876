package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentUnit(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteAgentFiles(root, bin, true); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", AgentUnitName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/lib/banger/banger-agent\n", "Restart=always\n",
		"After=local-fs.target", "WantedBy=sysinit.target multi-user.target\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q:\n%s", want, b)
		}
	}
}

func TestPrepareMissingAgentBinary(t *testing.T) {
	r := newRootfs(Limits{})
	_, err := r.prepare(context.Background(), filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "injecting agent") {
		t.Errorf("error = %v, want one about injecting the agent", err)
	}
}
