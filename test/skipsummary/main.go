// Command skipsummary reads `go test -json` output and tells a reader of a
// CI log which tests were skipped and why.
//
// Stream mode (the default) reads events on stdin, prints the test output
// as go test would (every line with -v; else package results and the
// output of failed and skipped tests), saves the raw events to -save FILE,
// and exits 1 when a test or package failed. Summary mode (-summary
// FILE...) reads saved events and prints the closing count, then every
// skip grouped by reason: skips made through prereq.ByDesign (opt-in
// tests, helper processes) apart from all others, which are unexpected.
// With -strict, unexpected skips make it exit 1.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"banger/internal/prereq"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type key struct{ pkg, test string }

// tally is what a run of events came to.
type tally struct {
	passed, failed int
	pkgFailed      []string
	skips          map[key]string // test -> reason
	output         map[key][]string
	failures       []failure // in the order they failed
}

// failure is a failed test and the lines it logged through t.Log or
// t.Error (file.go:N: ...), which is where its reasons are.
type failure struct {
	name  string
	lines [][]string // each a message's first line and what continues it
}

func newTally() *tally {
	return &tally{skips: map[key]string{}, output: map[key][]string{}}
}

// add records ev and returns the lines to print for it in stream mode.
func (t *tally) add(ev event, verbose bool) []string {
	k := key{ev.Package, ev.Test}
	switch ev.Action {
	case "output":
		if ev.Test == "" || verbose {
			return []string{ev.Output}
		}
		t.output[k] = append(t.output[k], ev.Output)
	case "pass":
		if ev.Test != "" {
			t.passed++
		}
		delete(t.output, k)
	case "fail":
		if ev.Test == "" {
			t.pkgFailed = append(t.pkgFailed, ev.Package)
			return nil
		}
		t.failed++
		out := t.output[k]
		delete(t.output, k)
		f := failure{name: strings.TrimPrefix(k.pkg, "banger/") + " " + k.test, lines: messages(out)}
		t.failures = append(t.failures, f)
		return out
	case "skip":
		if ev.Test == "" {
			return nil // a package without tests
		}
		t.skips[k] = skipReason(t.output[k])
		out := t.output[k]
		delete(t.output, k)
		if verbose {
			return nil
		}
		return out
	}
	return nil
}

var fileLine = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: `)

// messages picks what a test logged through t.Log or t.Error out of its
// output: each file.go:N: line with the lines that continue it (go test
// indents them deeper), such as the stderr of a command whose failure the
// first line names; of a longer message (a daemon log) the first and the
// last maxContLines/2.
func messages(out []string) [][]string {
	var msgs [][]string
	indent := -1 // of the message being read; -1 for none
	var ls []string
	for _, o := range out {
		ls = append(ls, strings.Split(strings.TrimRight(o, "\n"), "\n")...)
	}
	for _, l := range ls {
		n := len(l) - len(strings.TrimLeft(l, " "))
		switch {
		case fileLine.MatchString(l):
			msgs = append(msgs, []string{strings.TrimSpace(l)})
			indent = n
		case indent >= 0 && n > indent && !strings.HasPrefix(strings.TrimSpace(l), "=== "):
			msgs[len(msgs)-1] = append(msgs[len(msgs)-1], strings.TrimSpace(l))
		default:
			indent = -1
		}
	}
	for i, m := range msgs {
		if cont := m[1:]; len(cont) > maxContLines {
			half := maxContLines / 2
			cut := fmt.Sprintf("(%d lines more)", len(cont)-2*half)
			msgs[i] = slices.Concat(m[:1+half], []string{cut}, cont[len(cont)-half:])
		}
	}
	return msgs
}

// skipReason is the last message the test logged before `--- SKIP`.
func skipReason(lines []string) string {
	reason := "(no reason given)"
	for _, l := range lines {
		s := strings.TrimSpace(l)
		if s == "" || strings.HasPrefix(s, "=== ") || strings.HasPrefix(s, "--- ") {
			continue
		}
		if fileLine.MatchString(l) {
			reason = fileLine.ReplaceAllString(l, "")
		}
	}
	return strings.TrimSpace(reason)
}

func read(r io.Reader, t *tally, verbose bool, w io.Writer, save io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if save != nil {
			save.Write(line)
			save.Write([]byte{'\n'})
		}
		var ev event
		if json.Unmarshal(line, &ev) != nil || ev.Action == "" {
			fmt.Fprintf(w, "%s\n", line) // build errors and other plain text
			continue
		}
		for _, o := range t.add(ev, verbose) {
			io.WriteString(w, o)
		}
	}
	return sc.Err()
}

// summary prints the closing count and the skips; it returns how many
// skips were unexpected.
func summary(w io.Writer, t *tally) int {
	byDesign, other := map[string][]string{}, map[string][]string{}
	nDesign, nOther := 0, 0
	for k, reason := range t.skips {
		name := strings.TrimPrefix(k.pkg, "banger/") + " " + k.test
		if r, ok := strings.CutPrefix(reason, prereq.ByDesignPrefix); ok {
			byDesign[r] = append(byDesign[r], name)
			nDesign++
		} else {
			other[reason] = append(other[reason], name)
			nOther++
		}
	}
	fmt.Fprintf(w, "\nskip summary: %d skipped, %d by design, %d unexpected\n", nDesign+nOther, nDesign, nOther)
	group(w, "unexpected (a missing prerequisite or a raw t.Skip: install it, or skip through prereq)", other)
	group(w, "by design (opt-in or not applicable here)", byDesign)
	failures(w, t.failures)
	for _, p := range t.pkgFailed {
		fmt.Fprintf(w, "package failed: %s\n", p)
	}
	fmt.Fprintf(w, "tests: %d passed, %d failed, %d skipped\n", t.passed, t.failed, nDesign+nOther)
	return nOther
}

// Per failed test, at most maxFailLines of its logged messages (each with
// up to maxContLines lines that continue it) are repeated
// at the end, each cut to maxFailLine bytes: a CI log's reader sees why
// without scrolling back through every daemon log the test printed.
const (
	maxFailLines = 12
	maxFailLine  = 400
	maxContLines = 6
)

func failures(w io.Writer, fs []failure) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintf(w, "failed tests, and what they logged:\n")
	for _, f := range fs {
		fmt.Fprintf(w, "  %s\n", f.name)
		lines := f.lines
		if len(lines) > maxFailLines {
			fmt.Fprintf(w, "    (%d messages logged; the last %d)\n", len(lines), maxFailLines)
			lines = lines[len(lines)-maxFailLines:]
		}
		for _, m := range lines {
			for i, l := range m {
				if len(l) > maxFailLine {
					l = l[:maxFailLine] + " ..."
				}
				fmt.Fprintf(w, "    %s%s\n", strings.Repeat("  ", min(i, 1)), l)
			}
		}
	}
}

func group(w io.Writer, title string, m map[string][]string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(w, "  %s:\n", title)
	reasons := make([]string, 0, len(m))
	for r := range m {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		names := m[r]
		sort.Strings(names)
		fmt.Fprintf(w, "    %d × %s\n", len(names), r)
		for _, n := range names {
			fmt.Fprintf(w, "        %s\n", n)
		}
	}
}

func main() {
	verbose := flag.Bool("v", false, "stream mode: print every output line, as go test -v does")
	save := flag.String("save", "", "stream mode: also write the raw events to this file")
	sum := flag.Bool("summary", false, "read the saved event files given as arguments and print the skip summary")
	strict := flag.Bool("strict", false, "summary mode: exit 1 when a skip was unexpected")
	flag.Parse()
	t := newTally()
	if *sum {
		for _, f := range flag.Args() {
			fh, err := os.Open(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, "skipsummary:", err)
				os.Exit(2)
			}
			err = read(fh, t, false, io.Discard, nil)
			fh.Close()
			if err != nil {
				fmt.Fprintln(os.Stderr, "skipsummary:", f, err)
				os.Exit(2)
			}
		}
		if n := summary(os.Stdout, t); (n > 0 && *strict) || t.failed > 0 || len(t.pkgFailed) > 0 {
			os.Exit(1)
		}
		return
	}
	var sw io.Writer
	if *save != "" {
		f, err := os.Create(*save)
		if err != nil {
			fmt.Fprintln(os.Stderr, "skipsummary:", err)
			os.Exit(2)
		}
		defer f.Close()
		sw = f
	}
	if err := read(os.Stdin, t, *verbose, os.Stdout, sw); err != nil {
		fmt.Fprintln(os.Stderr, "skipsummary:", err)
		os.Exit(2)
	}
	if t.failed > 0 || len(t.pkgFailed) > 0 {
		os.Exit(1)
	}
}
