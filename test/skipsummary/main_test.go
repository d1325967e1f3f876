package main

import (
	"bytes"
	"strings"
	"testing"
)

// A run with one pass, one failure, a by-design skip and a raw skip is
// counted and grouped as a CI reader needs.
func TestSummary(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"banger/p","Test":"TestA"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"banger/p","Test":"TestA"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"    b_test.go:9: boom\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"    b_test.go:10: banger vm exec: exit 1\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        stderr: Error: the agent did not answer\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"    b_test.go:11: bangerd.log:\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l1\n        l2\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l3\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l4\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l5\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l6\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l7\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"        l8\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestB","Output":"--- FAIL: TestB (0.00s)\n"}`,
		`{"Action":"fail","Package":"banger/p","Test":"TestB"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestC","Output":"    c_test.go:3: by design: set X=1\n"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestC","Output":"--- SKIP: TestC (0.00s)\n"}`,
		`{"Action":"skip","Package":"banger/p","Test":"TestC"}`,
		`{"Action":"output","Package":"banger/p","Test":"TestD","Output":"    d_test.go:5: qemu not installed\n"}`,
		`{"Action":"skip","Package":"banger/p","Test":"TestD"}`,
		`{"Action":"output","Package":"banger/p","Output":"FAIL\tbanger/p\t0.1s\n"}`,
		`{"Action":"fail","Package":"banger/p"}`,
		`not json: a build error`,
	}, "\n")
	tl := newTally()
	var stream, saved bytes.Buffer
	if err := read(strings.NewReader(in), tl, false, &stream, &saved); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"b_test.go:9: boom", "FAIL\tbanger/p", "not json: a build error", "qemu not installed"} {
		if !strings.Contains(stream.String(), want) {
			t.Errorf("stream output lacks %q:\n%s", want, stream.String())
		}
	}
	if strings.Contains(stream.String(), "=== RUN   TestA") {
		t.Errorf("non-verbose stream printed a passing test's output:\n%s", stream.String())
	}
	if saved.String() != in+"\n" {
		t.Errorf("saved events differ from the input")
	}
	var sum bytes.Buffer
	if n := summary(&sum, tl); n != 1 {
		t.Errorf("unexpected skips = %d, want 1", n)
	}
	for _, want := range []string{
		"skip summary: 2 skipped, 1 by design, 1 unexpected",
		"1 × qemu not installed\n        p TestD",
		"1 × set X=1\n        p TestC",
		"failed tests, and what they logged:\n  p TestB\n    b_test.go:9: boom\n" +
			"    b_test.go:10: banger vm exec: exit 1\n      stderr: Error: the agent did not answer\n" +
			"    b_test.go:11: bangerd.log:\n      l1\n      l2\n      l3\n      (2 lines more)\n      l6\n      l7\n      l8\n",
		"package failed: banger/p",
		"tests: 1 passed, 1 failed, 2 skipped",
	} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}
