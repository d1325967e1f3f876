package firecracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"banger/internal/prereq"

	"gopkg.in/yaml.v3"
)

// specEnv overrides where the Firecracker API spec is looked for.
const specEnv = "BANGER_FIRECRACKER_SPEC"

// apiSpec is the part of a swagger 2.0 document the contract tests need.
type apiSpec struct {
	Paths       map[string]map[string]operation `yaml:"paths"`
	Definitions map[string]*schema              `yaml:"definitions"`
}

type operation struct {
	Parameters []parameter `yaml:"parameters"`
}

type parameter struct {
	Name     string  `yaml:"name"`
	In       string  `yaml:"in"`
	Required bool    `yaml:"required"`
	Type     string  `yaml:"type"`
	Schema   *schema `yaml:"schema"`
}

type schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*schema `yaml:"properties"`
	AdditionalProperties any                `yaml:"additionalProperties"`
	Items                *schema            `yaml:"items"`
	Enum                 []any              `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
}

// findSpecFile looks for shared/firecracker/firecracker.yaml beside the
// working directory or any of its parents (the checkout lives next to
// shared/), or at $BANGER_FIRECRACKER_SPEC. The string says where it
// looked when the file is absent.
func findSpecFile() (string, string) {
	if p := os.Getenv(specEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Sprintf("$%s=%s: %v", specEnv, p, err)
		}
		return p, ""
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err.Error()
	}
	for {
		p := filepath.Join(dir, "shared", "firecracker", "firecracker.yaml")
		if _, err := os.Stat(p); err == nil {
			return p, ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Sprintf("no shared/firecracker/firecracker.yaml beside the working directory or its parents, and $%s unset", specEnv)
		}
		dir = parent
	}
}

// loadSpec loads the API spec. When it is absent it returns nil and
// validateAll skips the test after its other checks ran.
func loadSpec(t *testing.T) *apiSpec {
	t.Helper()
	path, why := findSpecFile()
	if path == "" {
		// A wrong $BANGER_FIRECRACKER_SPEC is a mistake, and CI always
		// has the spec beside the checkout: both fail. Elsewhere the
		// caller skips what needs the spec.
		if os.Getenv(specEnv) != "" || prereq.Strict() {
			t.Fatalf("Firecracker API spec not found (%s): put firecracker.yaml at shared/firecracker/ beside the checkout or set $%s to it", why, specEnv)
		}
		t.Logf("Firecracker API spec not found (%s)", why)
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s apiSpec
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	if len(s.Paths) == 0 || len(s.Definitions) == 0 {
		t.Fatalf("%s has no paths or definitions", path)
	}
	return &s
}

// validate checks one request against the spec: the path exists with the
// method, path parameters are given, and the body satisfies the body
// parameter's schema.
func (s *apiSpec) validate(method, path string, body []byte) error {
	tmpl, ok := s.matchPath(path)
	if !ok {
		return fmt.Errorf("%s %s: no such path in the spec", method, path)
	}
	op, ok := s.Paths[tmpl][strings.ToLower(method)]
	if !ok {
		return fmt.Errorf("%s %s: path %s has no %s operation", method, path, tmpl, method)
	}
	var bodyParam *parameter
	for i := range op.Parameters {
		if op.Parameters[i].In == "body" {
			bodyParam = &op.Parameters[i]
		}
	}
	body = bytes.TrimSpace(body)
	switch {
	case bodyParam == nil && len(body) > 0:
		return fmt.Errorf("%s %s: the spec takes no body", method, path)
	case bodyParam == nil:
		return nil
	case len(body) == 0 && bodyParam.Required:
		return fmt.Errorf("%s %s: body required", method, path)
	case len(body) == 0:
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("%s %s: body is not JSON: %w", method, path, err)
	}
	if errs := s.check(bodyParam.Schema, v, "body"); len(errs) > 0 {
		return fmt.Errorf("%s %s (%s): %w", method, path, tmpl, errors.Join(errs...))
	}
	return nil
}

// matchPath finds the path template (like /drives/{drive_id}) of path.
func (s *apiSpec) matchPath(path string) (string, bool) {
	segs := strings.Split(path, "/")
	for tmpl := range s.Paths {
		tsegs := strings.Split(tmpl, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		ok := true
		for i, ts := range tsegs {
			isParam := strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}")
			if isParam && segs[i] == "" || !isParam && ts != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return tmpl, true
		}
	}
	return "", false
}

func (s *apiSpec) resolve(sc *schema) (*schema, error) {
	for sc != nil && sc.Ref != "" {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok {
			return nil, fmt.Errorf("unsupported $ref %q", sc.Ref)
		}
		next, ok := s.Definitions[name]
		if !ok {
			return nil, fmt.Errorf("$ref %q: no such definition", sc.Ref)
		}
		sc = next
	}
	return sc, nil
}

// check validates v (decoded with UseNumber) against sc at the JSON
// location at.
func (s *apiSpec) check(sc *schema, v any, at string) []error {
	sc, err := s.resolve(sc)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", at, err)}
	}
	if sc == nil {
		return nil
	}
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{at}, args...)...))
	}
	switch typ {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			fail("want object, got %T", v)
			return errs
		}
		return append(errs, s.checkObject(sc, obj, at)...)
	case "array":
		arr, ok := v.([]any)
		if !ok {
			fail("want array, got %T", v)
			return errs
		}
		for i, item := range arr {
			errs = append(errs, s.check(sc.Items, item, fmt.Sprintf("%s[%d]", at, i))...)
		}
		return errs
	case "string":
		if _, ok := v.(string); !ok {
			fail("want string, got %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("want boolean, got %T", v)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			fail("want %s, got %T", typ, v)
			return errs
		}
		f, err := n.Float64()
		if err != nil || typ == "integer" && strings.ContainsAny(n.String(), ".eE") {
			fail("want %s, got %s", typ, n)
			return errs
		}
		if sc.Minimum != nil && f < *sc.Minimum {
			fail("%s is below the minimum %v", n, *sc.Minimum)
		}
		if sc.Maximum != nil && f > *sc.Maximum {
			fail("%s is above the maximum %v", n, *sc.Maximum)
		}
	case "":
	default:
		fail("unsupported schema type %q", typ)
	}
	if len(sc.Enum) > 0 && len(errs) == 0 {
		got := fmt.Sprint(v)
		var allowed []string
		for _, e := range sc.Enum {
			allowed = append(allowed, fmt.Sprint(e))
		}
		if !contains(allowed, got) {
			fail("%q is not one of %v", got, allowed)
		}
	}
	return errs
}

func (s *apiSpec) checkObject(sc *schema, obj map[string]any, at string) []error {
	var errs []error
	for _, r := range sc.Required {
		if _, ok := obj[r]; !ok {
			errs = append(errs, fmt.Errorf("%s: required field %q missing", at, r))
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		prop, ok := sc.Properties[k]
		if !ok {
			// An object without properties is free-form (MmdsContentsObject).
			if sc.Properties != nil && sc.AdditionalProperties == nil {
				errs = append(errs, fmt.Errorf("%s: unknown field %q", at, k))
			}
			continue
		}
		errs = append(errs, s.check(prop, obj[k], at+"."+k)...)
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSpecValidatorCatches shows the validator rejects what Firecracker
// would: so a passing contract test means something.
func TestSpecValidatorCatches(t *testing.T) {
	s := loadSpec(t)
	if s == nil {
		prereq.Missing(t, "Firecracker API spec absent: the validator is not checked (shared/firecracker/firecracker.yaml beside the checkout, or $%s)", specEnv)
	}
	tests := []struct {
		name, method, path, body string
		wantErr                  string
	}{
		{"good drive", "PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/x","is_root_device":true,"is_read_only":false}`, ""},
		{"unknown path", "PUT", "/disks/root", `{}`, "no such path"},
		{"wrong method", "DELETE", "/drives/root", ``, "has no DELETE"},
		{"missing required", "PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/x"}`, `required field "is_root_device"`},
		{"unknown field", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"read_only":true}`, `unknown field "read_only"`},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":512}`, "want integer"},
		{"float for integer", "PUT", "/machine-config", `{"vcpu_count":2.5,"mem_size_mib":512}`, "want integer"},
		{"above maximum", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":512}`, "above the maximum"},
		{"bad enum", "PATCH", "/vm", `{"state":"Stopped"}`, "not one of"},
		{"bad action", "PUT", "/actions", `{"action_type":"Reboot"}`, "not one of"},
		{"cid below minimum", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v"}`, "below the minimum"},
		{"nested ref", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"Disk","backend_path":"/m"}}`, "body.mem_backend.backend_type"},
		{"array items", "PUT", "/snapshot/load", `{"snapshot_path":"/s","network_overrides":[{"iface_id":"eth0"}]}`, `body.network_overrides[0]: required field "host_dev_name"`},
		{"body on GET", "GET", "/version", `{"x":1}`, "takes no body"},
		{"missing body", "PUT", "/boot-source", ``, "body required"},
		{"empty path param", "PUT", "/drives/", `{}`, "no such path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.validate(tt.method, tt.path, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("no error, want one containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}
