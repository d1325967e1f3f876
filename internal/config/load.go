package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// SourceDefault is the source of a value config.toml does not set.
const SourceDefault = "default"

// Sources maps a key to where its effective value came from: SourceDefault
// or "<file>:<line>". Keys absent from the map are defaults.
type Sources map[string]string

// Of returns where key's value came from.
func (s Sources) Of(key string) string {
	if src, ok := s[key]; ok {
		return src
	}
	return SourceDefault
}

// Error is one problem in a config file. Load returns them joined with
// errors.Join; use errors.As to get at the first.
type Error struct {
	File   string
	Line   int    // 1-based; 0 when the problem has no single line
	Column int    // 1-based; 0 when unknown
	Key    string // the key at fault; empty for syntax errors
	Msg    string // names the key and the valid values
}

func (e *Error) Error() string {
	switch {
	case e.Line == 0:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Column == 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
}

// Load reads the config file at path over the defaults. A missing file is
// not an error: it yields Default() with every source SourceDefault. Every
// problem found is reported (errors.Join of *Error), each naming the file,
// the line and the key.
//
// The environment variable BANGER_WARM_START (true or false) overrides
// warm_start, for a script or a test suite that wants every VM to boot
// cold (or warm) whatever the file says.
func Load(path string) (Config, Sources, error) {
	data, err := readTrusted(path)
	var cfg Config
	var src Sources
	switch {
	case errors.Is(err, fs.ErrNotExist):
		cfg, src = Default(), Sources{}
	case err != nil:
		return Config{}, nil, fmt.Errorf("reading config: %w", err)
	default:
		if cfg, src, err = Parse(path, data); err != nil {
			return cfg, src, err
		}
	}
	if err := applyEnv(&cfg, src); err != nil {
		return Config{}, nil, err
	}
	return cfg, src, nil
}

// WarmStartEnv overrides warm_start (see Load).
const WarmStartEnv = "BANGER_WARM_START"

func applyEnv(cfg *Config, src Sources) error {
	v, ok := os.LookupEnv(WarmStartEnv)
	if !ok || v == "" {
		return nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%s=%q: want true or false", WarmStartEnv, v)
	}
	cfg.WarmStart = b
	src["warm_start"] = "$" + WarmStartEnv
	return nil
}

// maxConfigBytes bounds what Load reads: a config.toml is a few lines.
const maxConfigBytes = 1 << 20

// readTrusted reads a regular file that only root or the user can change
// (config values name binaries bangerd runs as root).
func readTrusted(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if err := checkTrustedFile(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxConfigBytes)
	}
	return data, nil
}

// Parse is Load for a file already read; name is used in messages.
func Parse(name string, data []byte) (Config, Sources, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return Config{}, nil, syntaxError(name, err)
	}
	positions, err := keyPositions(data)
	if err != nil {
		return Config{}, nil, syntaxError(name, err)
	}

	cfg, src := Default(), Sources{}
	var errs []error
	for _, kname := range sortedByLine(doc, positions) {
		pos := positions[kname]
		fail := func(msg string) {
			errs = append(errs, &Error{File: name, Line: pos.Line, Key: kname, Msg: msg})
		}
		k, ok := lookupKey(kname)
		if !ok {
			fail(fmt.Sprintf("unknown key %q (valid keys: %s)", kname, strings.Join(Keys(), ", ")))
			continue
		}
		if err := k.apply(&cfg, doc[kname]); err != nil {
			fail(err.Error())
			continue
		}
		src[kname] = name + ":" + strconv.Itoa(pos.Line)
	}
	if len(errs) > 0 {
		return Config{}, nil, errors.Join(errs...)
	}

	// Without its own bridge_ip, a custom cidr gets its first host address.
	if _, ok := src["bridge_ip"]; !ok {
		if _, ok := src["cidr"]; ok {
			cfg.BridgeIP = cfg.CIDR.Addr().Next()
		}
	}
	if err := checkNetwork(cfg); err != nil {
		at := "bridge_ip"
		if _, ok := src[at]; !ok {
			at = "cidr"
		}
		return Config{}, nil, &Error{File: name, Line: positions[at].Line, Key: at, Msg: err.Error()}
	}
	if err := checkWeb(cfg); err != nil {
		return Config{}, nil, &Error{File: name, Line: positions["web_listen_addr"].Line, Key: "web_listen_addr", Msg: err.Error()}
	}
	return cfg, src, nil
}

// keyPositions returns where each top-level key (or table) is first named.
// Keys inside a [table] are not top-level and are not recorded.
func keyPositions(data []byte) (map[string]unstable.Position, error) {
	pos := make(map[string]unstable.Position)
	var p unstable.Parser
	p.Reset(data)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTable = true
		case unstable.KeyValue:
			if inTable {
				continue
			}
		default:
			continue
		}
		it := e.Key()
		if !it.Next() {
			continue
		}
		k := it.Node()
		if _, seen := pos[string(k.Data)]; !seen {
			pos[string(k.Data)] = p.Shape(k.Raw).Start
		}
	}
	return pos, p.Error()
}

// sortedByLine returns the document's keys in file order.
func sortedByLine(doc map[string]any, pos map[string]unstable.Position) []string {
	names := make([]string, 0, len(doc))
	for k := range doc {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := pos[a].Offset - pos[b].Offset; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return names
}

// syntaxError turns a go-toml error into an *Error with its position.
func syntaxError(name string, err error) error {
	e := &Error{File: name, Msg: "invalid TOML: " + strings.TrimPrefix(err.Error(), "toml: ")}
	var de *toml.DecodeError
	var pe *unstable.ParserError
	switch {
	case errors.As(err, &de):
		e.Line, e.Column = de.Position()
		if k := de.Key(); len(k) > 0 {
			e.Key = k[0]
		}
	case errors.As(err, &pe):
		// Only keyPositions' parser returns these, and go-toml's Unmarshal
		// parses first, so this is a fallback.
		e.Msg = "invalid TOML: " + pe.Message
	}
	return e
}
