package config

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// DefaultCredentialFiles are the coding agents' auth files synced into
// every VM at start when credential_files is not set: opencode, Claude
// Code and pi. Their session and history directories are not.
var DefaultCredentialFiles = []string{
	"~/.local/share/opencode/auth.json",
	"~/.claude/.credentials.json",
	"~/.pi/agent/auth.json",
}

// GuestHome is the home directory in a guest: credential files land
// under it.
const GuestHome = "/root"

// Credential is one credential file to sync: Host is read on the host (as
// the invoking user) and written to Guest in the guest.
type Credential struct {
	Host  string
	Guest string
}

// Credentials maps the credential_files list to host and guest paths,
// with home the invoking user's home (UserHome). "~/P" and an absolute
// path under home both land at /root/P in the guest; any other absolute
// path lands at that same path in the guest.
func (c Config) Credentials(home string) []Credential {
	out := make([]Credential, 0, len(c.CredentialFiles))
	for _, p := range c.CredentialFiles {
		out = append(out, credentialOf(p, home))
	}
	return out
}

func credentialOf(p, home string) Credential {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return Credential{Host: filepath.Join(home, rest), Guest: path.Join(GuestHome, rest)}
	}
	if rel, err := filepath.Rel(home, p); err == nil && home != "" && rel != "." && !strings.HasPrefix(rel, "..") {
		return Credential{Host: p, Guest: path.Join(GuestHome, filepath.ToSlash(rel))}
	}
	return Credential{Host: p, Guest: p}
}

// UserHome is the invoking user's home: SUDO_USER's under sudo, else
// $HOME (as os.UserHomeDir), else /root.
func UserHome() string { return userHome() }

func applyCredentialFiles(c *Config, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("credential_files: expected an array of paths like [\"~/.claude/.credentials.json\"], got %s", tomlType(v))
	}
	files := make([]string, 0, len(list))
	seen := map[string]bool{}
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return fmt.Errorf("credential_files[%d]: expected a string holding a path, got %s", i, tomlType(e))
		}
		p, err := checkCredentialPath(s)
		if err != nil {
			return fmt.Errorf("credential_files[%d] = %q: %v", i, s, err)
		}
		if seen[p] {
			return fmt.Errorf("credential_files[%d] = %q: listed twice", i, s)
		}
		seen[p] = true
		files = append(files, p)
	}
	c.CredentialFiles = files
	return nil
}

// checkCredentialPath accepts "~/P" or an absolute path naming a file
// (not a home or root directory, no ".." parts) and returns it cleaned.
func checkCredentialPath(s string) (string, error) {
	const want = "must be a file path starting with ~/ (in your home) or / (absolute)"
	rest, tilde := strings.CutPrefix(s, "~/")
	switch {
	case !tilde && !filepath.IsAbs(s):
		return "", fmt.Errorf("%s", want)
	case strings.ContainsRune(s, 0):
		return "", fmt.Errorf("contains a NUL byte")
	}
	body := s
	if tilde {
		body = rest
	}
	for _, part := range strings.Split(body, "/") {
		if part == ".." {
			return "", fmt.Errorf("has a \"..\" part; %s", want)
		}
	}
	clean := filepath.Clean(body)
	if tilde {
		if clean == "." || clean == "/" || clean == "" {
			return "", fmt.Errorf("names your home directory, not a file; %s", want)
		}
		return "~/" + strings.TrimPrefix(clean, "/"), nil
	}
	if clean == "/" {
		return "", fmt.Errorf("names /, not a file; %s", want)
	}
	return clean, nil
}
