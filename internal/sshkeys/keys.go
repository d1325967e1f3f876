// Package sshkeys makes the SSH keys banger uses to reach guests: the
// user's client key, each VM's host key, and a banger-managed known_hosts
// that pins every VM's host key so nobody is asked to trust a fingerprint.
package sshkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Pair is an ed25519 key pair in OpenSSH's file formats.
type Pair struct {
	Private []byte // OpenSSH PEM private key
	Public  string // authorized_keys line without a newline: "ssh-ed25519 AAAA... comment"
}

// Generate makes a new ed25519 key pair; comment ends the public line.
func Generate(comment string) (Pair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("generating ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return Pair{}, fmt.Errorf("encoding private key: %w", err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return Pair{}, fmt.Errorf("encoding public key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub)))
	if comment != "" {
		line += " " + comment
	}
	return Pair{Private: pem.EncodeToMemory(block), Public: line}, nil
}

// EnsureUserKey returns the public line of the private key at path,
// creating the key (path, 0600, and path.pub, 0644) when path does not
// exist. A key that exists without its .pub has the public part derived.
func EnsureUserKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createUserKey(path)
	}
	if err != nil {
		return "", fmt.Errorf("reading ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err == nil {
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
	}
	if pub, perr := os.ReadFile(path + ".pub"); perr == nil {
		return strings.TrimSpace(string(pub)), nil // e.g. a passphrase-protected key
	}
	return "", fmt.Errorf("ssh key %s: %w (set ssh_key_path to a key with a .pub next to it, or remove it so banger makes one)", path, err)
}

func createUserKey(path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("making ssh key directory: %w", err)
	}
	p, err := Generate("banger")
	if err != nil {
		return "", err
	}
	// Link a whole private key into place, so a concurrent banger either
	// sees none or a complete one; the .pub follows.
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := os.WriteFile(tmp, p.Private, 0o600); err != nil {
		return "", fmt.Errorf("writing ssh key: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return EnsureUserKey(path) // another banger won the race
		}
		return "", fmt.Errorf("writing ssh key: %w", err)
	}
	if err := os.WriteFile(path+".pub", []byte(p.Public+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing ssh key: %w", err)
	}
	return p.Public, nil
}

// Signer loads the private key at path for Go's ssh client.
func Signer(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ssh key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	return s, nil
}
