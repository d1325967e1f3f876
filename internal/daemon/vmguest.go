package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"banger/internal/atomicfile"
	"banger/internal/image"
	"banger/internal/sshkeys"
	"banger/internal/store"
)

// hostKeyFile is where a VM's public host key is kept, in its directory,
// for banger vm ssh to pin.
const hostKeyFile = "ssh_host_ed25519_key.pub"

// sshdDropIn makes the guest's sshd accept keys only, for root too, and
// serve only the host key banger pinned.
const sshdDropIn = `# Written by banger at VM creation.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`

// prepareGuest makes the per-VM pieces the guest gets at its first boot,
// as a seed drive (a plain tar on a read-only disk that banger's initrd
// copies into the root; no filesystem work on the host): a fresh SSH host
// key (kept in the VM's directory so banger can pin it), the user's key in
// root's authorized_keys, an sshd drop-in that allows key logins only, and
// the VM's agent key (also kept in the VM's directory, 0600), without
// which the guest agent serves nobody.
func (m *vmManager) prepareGuest(ctx context.Context, v store.VM, im image.Image) error {
	userPub, err := m.userKey()
	if err != nil {
		return err
	}
	host, err := sshkeys.Generate("root@" + v.Name)
	if err != nil {
		return err
	}
	key, keyEntry, err := newAgentKeySeed()
	if err != nil {
		return err
	}
	files := []seedFile{
		{"etc", 0o755, ""},
		{"etc/ssh", 0o755, ""},
		{"etc/ssh/sshd_config.d", 0o755, ""},
		{"root", 0o700, ""},
		{"root/.ssh", 0o700, ""},
		{"etc/ssh/ssh_host_ed25519_key", 0o600, string(host.Private)},
		{"etc/ssh/ssh_host_ed25519_key.pub", 0o644, host.Public + "\n"},
		{"etc/ssh/sshd_config.d/banger.conf", 0o644, sshdDropIn},
		{"root/.ssh/authorized_keys", 0o600, userPub + "\n"},
		keyEntry,
	}
	if err := writeSeed(filepath.Join(v.Dir, seedFileName), files); err != nil {
		return fmt.Errorf("writing ssh keys for vm %q: %w", v.Name, err)
	}
	if err := saveAgentKey(v.Dir, key); err != nil {
		return fmt.Errorf("vm %q: %w", v.Name, err)
	}
	if err := os.WriteFile(filepath.Join(v.Dir, hostKeyFile), []byte(host.Public+"\n"), 0o600); err != nil {
		return fmt.Errorf("saving host key of vm %q: %w", v.Name, err)
	}
	return nil
}

// userKey returns the public line of the user's banger SSH key, creating
// the key when it is missing. A key the daemon creates belongs to the
// owner of the config directory, so the user's ssh can read it.
func (m *vmManager) userKey() (string, error) {
	path := m.cfg.UserSSHKey
	_, statErr := os.Stat(path)
	pub, err := sshkeys.EnsureUserKey(path)
	if err != nil {
		return "", fmt.Errorf("user ssh key: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		chownLikeParent(path)
	}
	return pub, nil
}

// chownLikeParent gives path, path.pub and path's directory to the owner
// of the nearest existing ancestor above that directory.
func chownLikeParent(path string) {
	dir := filepath.Dir(path)
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || sys.Uid == uint32(os.Geteuid()) {
			return
		}
		for _, q := range []string{dir, path, path + ".pub"} {
			os.Lchown(q, int(sys.Uid), int(sys.Gid))
		}
		return
	}
}

// hostKey returns the public host key banger made for v.
func hostKey(v store.VM) (string, error) {
	b, err := os.ReadFile(filepath.Join(v.Dir, hostKeyFile))
	if err != nil {
		return "", fmt.Errorf("host key of vm %q: %w (it was created before banger managed ssh keys; recreate it)", v.Name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// seedFileName is the seed drive in the VM's directory.
const seedFileName = "seed.tar"

// seedFile is one entry of the seed: a directory when data is empty and
// the mode has no file bits set by the caller's intent (dirs are listed
// first, with empty data).
type seedFile struct {
	path string
	mode fs.FileMode
	data string
}

// writeSeed writes the seed tar (0600, it holds keys; replaced
// atomically): root-owned entries, directories first.
func writeSeed(path string, files []seedFile) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range files {
		hdr := &tar.Header{Name: e.path, Mode: int64(e.mode), Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.data == "" {
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, buf.Bytes(), 0o600)
}
