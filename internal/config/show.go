package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Entry is one effective setting, for `banger config show --json`.
type Entry struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`  // string, int or []string
	Source string `json:"source"` // SourceDefault or "<file>:<line>"
}

// Entries returns every key's effective value and source, in key order.
func Entries(cfg Config, src Sources) []Entry {
	out := make([]Entry, len(keys))
	for i, k := range keys {
		out[i] = Entry{Key: k.name, Value: k.value(cfg), Source: src.Of(k.name)}
	}
	return out
}

// Show renders the effective config as TOML, one `key = value  # from
// source` line per key, in key order, with the comments aligned.
func Show(cfg Config, src Sources) string {
	entries := Entries(cfg, src)
	lines := make([]string, len(entries))
	width := 0
	for i, e := range entries {
		lines[i] = e.Key + " = " + tomlValue(e.Value)
		width = max(width, len(lines[i]))
	}
	var b strings.Builder
	for i, e := range entries {
		fmt.Fprintf(&b, "%-*s  # from %s\n", width, lines[i], e.Source)
	}
	return b.String()
}

// tomlValue renders an Entry value as a TOML literal.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case int:
		return strconv.Itoa(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	default:
		return fmt.Sprint(v)
	}
}
