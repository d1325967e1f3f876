package crashpoint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every point in All is passed to Hit somewhere outside this package, so
// the crash matrix, which kills at each, never waits for a point nobody
// reaches; and every constant declared here is in All.
func TestEveryPointIsPlaced(t *testing.T) {
	consts := map[string]Point{} // Go name: point
	f, err := parser.ParseFile(token.NewFileSet(), "crashpoint.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Point" {
				lit := vs.Values[0].(*ast.BasicLit).Value
				consts[vs.Names[0].Name] = Point(strings.Trim(lit, `"`))
			}
		}
	}
	used := map[string]bool{}
	root := filepath.Join("..", "..")
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, _ := os.ReadFile(p)
		for name := range consts {
			if strings.Contains(string(b), "crashpoint."+name+")") || strings.Contains(string(b), "crashpoint."+name+",") {
				used[name] = true
			}
		}
		return nil
	})
	for name, p := range consts {
		if !Known(p) {
			t.Errorf("%s (%s) is declared but not in All", name, p)
		}
		if !used[name] {
			t.Errorf("%s (%s) is in All but no code hits it", name, p)
		}
	}
	if len(consts) != len(All) {
		t.Errorf("%d point constants, %d in All", len(consts), len(All))
	}
}
