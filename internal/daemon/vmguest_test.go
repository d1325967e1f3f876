package daemon

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/store"
)

// prepareGuest makes the seed drive with the host key, root's
// authorized_keys and the sshd drop-in, makes the user key when missing,
// and keeps the public host key for vm ssh to pin.
func TestPrepareGuest(t *testing.T) {
	dir := t.TempDir()
	dirs := config.Dirs{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config")}
	m := newVMManager(vmParts{cfg: vmSettings{UserSSHKey: config.Default().SSHKey(dirs)}})
	v := store.VM{Name: "g1", Dir: filepath.Join(dir, "vm")}
	os.MkdirAll(v.Dir, 0o755)
	ctx := context.Background()
	if err := m.prepareGuest(ctx, v, image.Image{}); err != nil {
		t.Fatal(err)
	}
	userPub, err := os.ReadFile(filepath.Join(dirs.Config, "ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatalf("user key not made: %v", err)
	}
	hostPub, err := hostKey(v)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(v.Dir, seedFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]*tar.Header{}
	content := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name], content[hdr.Name] = hdr, string(b)
	}
	for _, tc := range []struct {
		path, want string
		mode       int64
	}{
		{"root/.ssh/authorized_keys", strings.TrimSpace(string(userPub)), 0o600},
		{"etc/ssh/ssh_host_ed25519_key.pub", hostPub, 0o644},
		{"etc/ssh/ssh_host_ed25519_key", "BEGIN OPENSSH PRIVATE KEY", 0o600},
		{"etc/ssh/sshd_config.d/banger.conf", "PasswordAuthentication no", 0o644},
		{"var/lib/banger/agent.key", hex.EncodeToString(mustKey(t, v)), 0o600},
	} {
		h := got[tc.path]
		if h == nil || !strings.Contains(content[tc.path], tc.want) || h.Mode != tc.mode || h.Uid != 0 {
			t.Errorf("%s: header %+v content %q; want mode %o, root, containing %q", tc.path, h, content[tc.path], tc.mode, tc.want)
		}
	}
	if h := got["root/.ssh"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o700 {
		t.Errorf("root/.ssh: %+v", h)
	}
}

func mustKey(t *testing.T, v store.VM) []byte {
	t.Helper()
	k, err := loadAgentKey(v)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(v.Dir, agentKeyFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("agent.key mode %v, want 0600", st.Mode().Perm())
	}
	return k
}
