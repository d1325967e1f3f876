package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
)

// DefaultMirror is used when the host's apt sources name no Debian mirror.
const DefaultMirror = "http://deb.debian.org/debian"

// DebianKeyring is the Debian archive keyring (binary OpenPGP) that
// InRelease files are verified against.
const DebianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// HostMirror returns the first http(s) Debian mirror that the apt sources
// under root (normally "/") list for suite, or DefaultMirror. It reads
// etc/apt/sources.list, etc/apt/sources.list.d/*.list and deb822 *.sources.
func HostMirror(root, suite string) string {
	files := []string{filepath.Join(root, "etc/apt/sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d", pat))
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uris []string
		if strings.HasSuffix(f, ".sources") {
			uris = deb822Mirrors(data, suite)
		} else {
			uris = oneLineMirrors(data, suite)
		}
		if len(uris) > 0 {
			return strings.TrimRight(uris[0], "/")
		}
	}
	return DefaultMirror
}

func isHTTP(uri string) bool {
	return strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://")
}

// oneLineMirrors parses "deb [opts] URI suite comp..." lines.
func oneLineMirrors(data []byte, suite string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && isHTTP(f[0]) && f[1] == suite {
			out = append(out, f[0])
		}
	}
	return out
}

// deb822Mirrors parses deb822 stanzas with Types, URIs and Suites fields.
func deb822Mirrors(data []byte, suite string) []string {
	var out []string
	for _, st := range parseStanzas(data) {
		if st["Enabled"] == "no" || !hasWord(st["Types"], "deb") || !hasWord(st["Suites"], suite) {
			continue
		}
		for _, u := range strings.Fields(st["URIs"]) {
			if isHTTP(u) {
				out = append(out, u)
			}
		}
	}
	return out
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// parseStanzas parses RFC822-style stanzas (Packages, Release, deb822
// sources). Continuation lines are joined with "\n"; comments dropped.
func parseStanzas(data []byte) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = map[string]string{}, ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.TrimSpace(k)
			cur[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// release is the verified content of an InRelease file.
type release struct {
	Codename string
	Suite    string
	files    map[string]fileSum // path -> sha256 and size
}

type fileSum struct {
	SHA256 string
	Size   int64
}

// verifyInRelease checks the clearsigned InRelease data against the
// binary keyring file and returns the parsed signed text. Only the signed
// text is parsed, so nothing outside the signature can be smuggled in.
func verifyInRelease(data []byte, keyringPath string) (*release, error) {
	kf, err := os.Open(keyringPath)
	if err != nil {
		return nil, fmt.Errorf("opening keyring (install debian-archive-keyring): %w", err)
	}
	defer kf.Close()
	keyring, err := openpgp.ReadKeyRing(kf)
	if err != nil {
		return nil, fmt.Errorf("reading keyring %s: %w", keyringPath, err)
	}
	block, _ := clearsign.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: InRelease is not a clearsigned message", ErrInvalid)
	}
	if _, err := block.VerifySignature(keyring, nil); err != nil {
		return nil, fmt.Errorf("%w: InRelease signature: %w", ErrInvalid, err)
	}
	return parseRelease(block.Plaintext)
}

func parseRelease(text []byte) (*release, error) {
	st := parseStanzas(text)
	if len(st) == 0 {
		return nil, fmt.Errorf("%w: empty Release file", ErrInvalid)
	}
	r := &release{Codename: st[0]["Codename"], Suite: st[0]["Suite"], files: map[string]fileSum{}}
	for _, line := range strings.Split(st[0]["SHA256"], "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		r.files[f[2]] = fileSum{SHA256: strings.ToLower(f[0]), Size: size}
	}
	if len(r.files) == 0 {
		return nil, fmt.Errorf("%w: Release file lists no SHA256 sums", ErrInvalid)
	}
	return r, nil
}

// debPackage is one stanza of a Packages index.
type debPackage struct {
	Name     string
	Version  string
	Depends  string
	Filename string
	SHA256   string
	Size     int64
}

// parsePackages reads a Packages index, keeping only the fields needed
// (the index has some 60,000 stanzas; a generic parse is slow).
func parsePackages(data []byte) map[string][]debPackage {
	idx := map[string][]debPackage{}
	var p debPackage
	flush := func() {
		if p.Name != "" {
			idx[p.Name] = append(idx[p.Name], p)
		}
		p = debPackage{}
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		val := func() string { return string(bytes.TrimSpace(v)) }
		switch string(k) {
		case "Package":
			p.Name = val()
		case "Version":
			p.Version = val()
		case "Depends":
			p.Depends = val()
		case "Filename":
			p.Filename = val()
		case "SHA256":
			p.SHA256 = strings.ToLower(val())
		case "Size":
			p.Size, _ = strconv.ParseInt(val(), 10, 64)
		}
	}
	flush()
	return idx
}

// resolveKernel follows a kernel metapackage (linux-image-cloud-amd64)
// through its Depends to the package that ships the kernel image.
func resolveKernel(idx map[string][]debPackage, name string) (debPackage, error) {
	seen := map[string]bool{}
	want := ""
	for depth := 0; depth < 4; depth++ {
		p, ok := pickVersion(idx[name], want)
		if !ok {
			return debPackage{}, fmt.Errorf("%w: package %s not in the Packages index", ErrInvalid, name)
		}
		seen[name] = true
		next, ver := kernelDep(p.Depends)
		if next == "" || seen[next] {
			if !strings.HasPrefix(p.Name, "linux-image-") {
				return debPackage{}, fmt.Errorf("%w: %s is not a kernel image package", ErrInvalid, name)
			}
			return p, nil
		}
		name, want = next, ver
	}
	return debPackage{}, fmt.Errorf("%w: %s: dependency chain too long", ErrInvalid, name)
}

// kernelDep returns the first linux-image-* dependency and its "(= V)".
func kernelDep(depends string) (name, version string) {
	for _, dep := range strings.Split(depends, ",") {
		for _, alt := range strings.Split(dep, "|") {
			alt = strings.TrimSpace(alt)
			n, rest, _ := strings.Cut(alt, " ")
			if !strings.HasPrefix(n, "linux-image-") {
				continue
			}
			rest = strings.Trim(strings.TrimSpace(rest), "()")
			if v, ok := strings.CutPrefix(rest, "= "); ok {
				version = strings.TrimSpace(v)
			}
			return n, version
		}
	}
	return "", ""
}

func pickVersion(ps []debPackage, version string) (debPackage, bool) {
	if len(ps) == 0 {
		return debPackage{}, false
	}
	if version == "" {
		return ps[len(ps)-1], true
	}
	for _, p := range ps {
		if p.Version == version {
			return p, true
		}
	}
	return debPackage{}, false
}
