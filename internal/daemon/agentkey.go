package daemon

import (
	"archive/tar"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/guest"
	"banger/internal/store"
)

// agentKeyFile holds a VM's agent key (hex) in its directory, 0600. The
// same key reaches the guest on the seed drive, at guest.AgentKeyPath.
const agentKeyFile = "agent.key"

// agentKeySeedPath is guest.AgentKeyPath as a seed entry name.
var agentKeySeedPath = strings.TrimPrefix(guest.AgentKeyPath, "/")

// newAgentKeySeed makes a fresh agent key and its seed entry.
func newAgentKeySeed() ([]byte, seedFile, error) {
	k, err := guest.NewKey()
	if err != nil {
		return nil, seedFile{}, err
	}
	return k, seedFile{agentKeySeedPath, 0o600, hex.EncodeToString(k) + "\n"}, nil
}

// saveAgentKey writes the host's copy of a VM's agent key.
func saveAgentKey(dir string, key []byte) error {
	if err := atomicfile.WriteFile(filepath.Join(dir, agentKeyFile), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("saving agent key: %w", err)
	}
	return nil
}

// loadAgentKey reads the host's copy of a VM's agent key.
func loadAgentKey(v store.VM) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(v.Dir, agentKeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent key of vm %q: %w (restart the vm to make one)", v.Name, err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != guest.KeySize {
		return nil, fmt.Errorf("agent key of vm %q in %s is damaged (remove it and restart the vm to make a new one)", v.Name, v.Dir)
	}
	return k, nil
}

// ensureAgentKey gives a VM made before agent keys existed (or whose key
// file is gone) a fresh key, on its seed drive and in its directory. The
// guest's initrd applies the changed seed at the next boot; the seed's
// other files are applied again with it.
func ensureAgentKey(v store.VM) error {
	if _, err := loadAgentKey(v); err == nil {
		return nil
	}
	key, entry, err := newAgentKeySeed()
	if err != nil {
		return err
	}
	seed := filepath.Join(v.Dir, seedFileName)
	files, err := readSeed(seed)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading the seed of vm %q: %w", v.Name, err)
	}
	kept := files[:0]
	for _, f := range files {
		if f.path != agentKeySeedPath {
			kept = append(kept, f)
		}
	}
	if err := writeSeed(seed, append(kept, entry)); err != nil {
		return fmt.Errorf("writing the seed of vm %q: %w", v.Name, err)
	}
	return saveAgentKey(v.Dir, key)
}

// readSeed reads back a seed tar written by writeSeed.
func readSeed(path string) ([]seedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []seedFile
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return nil, err
		}
		out = append(out, seedFile{hdr.Name, fs.FileMode(hdr.Mode).Perm(), string(b)})
	}
}

// unauthenticated explains a guest agent that refused the VM's key.
func unauthenticated(v store.VM, err error) error {
	return api.Errorf(api.Conflict, "vm %q: %v: the key in the guest (%s) is not the one in %s",
		v.Name, err, guest.AgentKeyPath, filepath.Join(v.Dir, agentKeyFile)).
		WithHint(fmt.Sprintf("the guest's copy was changed or its seed was not applied; recreate the vm (banger vm delete %s)", v.Name))
}
