package image

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// treeOf describes every entry under root: mode, and symlink target or
// (for small files) content.
func treeOf(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := st.Mode().String()
		if st.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		} else if st.Mode().IsRegular() && st.Size() < 64 {
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		}
		got[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestInjectAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(bin, []byte("agent-binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	unitLink := "Lrwxrwxrwx -> /etc/systemd/system/banger-agent.service"
	tests := []struct {
		name    string
		systemd string // path of systemd inside the tree, "" for none
		want    map[string]string
	}{
		{name: "no init system", want: map[string]string{
			"usr":                         "drwxr-xr-x",
			"usr/lib":                     "drwxr-xr-x",
			"usr/lib/banger":              "drwxr-xr-x",
			"usr/lib/banger/banger-agent": "-rwxr-xr-x agent-binary",
		}},
		{name: "systemd", systemd: "usr/lib/systemd/systemd", want: map[string]string{
			"usr":                         "drwxr-xr-x",
			"usr/lib":                     "drwxr-xr-x",
			"usr/lib/systemd":             "drwxr-xr-x",
			"usr/lib/systemd/systemd":     "-rwxr-xr-x init",
			"usr/lib/banger":              "drwxr-xr-x",
			"usr/lib/banger/banger-agent": "-rwxr-xr-x agent-binary",
			"etc":                         "drwxr-xr-x",
			"etc/systemd":                 "drwxr-xr-x",
			"etc/systemd/system":          "drwxr-xr-x",
			"etc/systemd/system/banger-agent.service":                         "-rw-r--r--",
			"etc/systemd/system/multi-user.target.wants":                      "drwxr-xr-x",
			"etc/systemd/system/multi-user.target.wants/banger-agent.service": unitLink,
			"etc/systemd/system/sysinit.target.wants":                         "drwxr-xr-x",
			"etc/systemd/system/sysinit.target.wants/banger-agent.service":    unitLink,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.systemd != "" {
				p := filepath.Join(root, tt.systemd)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("init"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// Twice: injecting is idempotent.
			for range 2 {
				if err := InjectAgent(root, bin); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.want, treeOf(t, root)); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
		})
	}
}

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

func TestInjectAgentMissingBinary(t *testing.T) {
	err := InjectAgent(t.TempDir(), filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "installing agent") {
		t.Errorf("error = %v, want one about installing the agent", err)
	}
}
