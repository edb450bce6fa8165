// Command testreport runs `go test -json` and prints what plain `go test`
// prints (each package's summary line, the full output of every failing
// test, build errors), then lists every skipped test with its reason: a test
// that skips because a tool is missing must not pass unnoticed. It exits
// with the command's exit code.
//
//	testreport go test -race -json -timeout 25m ./...
//
// The command's standard error passes through untouched.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs args (a go test -json command line), reports on its output, and
// returns the exit code to leave with.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: testreport go test -json [flags] [packages]")
		return 2
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "testreport:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "testreport:", err)
		return 2
	}
	// Ctrl-C reaches go test too (same process group); the report must
	// still print what it ran, so this process waits for it to end.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	r := newReport(stdout)
	if err := r.read(out); err != nil {
		fmt.Fprintln(stderr, "testreport: reading go test's output:", err)
	}
	err = cmd.Wait()
	r.summary()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintln(stderr, "testreport:", err)
		return 2
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	Elapsed    float64 // seconds, on a test's or package's end
	ImportPath string  // build-output and build-fail
}

// line is one output line of a test, kept until its top-level test ends.
type line struct {
	test string
	text string
}

// topTest is a top-level test with its subtests: the output of a failing
// test is printed as one block when its top-level test ends.
type topTest struct {
	lines      []line
	outcome    map[string]string // test (or subtest) -> pass, fail or skip
	failedSubs []string          // in the order they failed
}

// testRef names a test of a package, with why it skipped.
type testRef struct {
	pkg, test, reason string
}

// report turns a go test -json stream into plain go test output and the
// lists of skipped and failed tests. Not safe for concurrent use.
type report struct {
	w       io.Writer
	running map[string]map[string]*topTest // package -> top-level test name
	skips   []testRef
	fails   []testRef // the failed subtests, or the test when none failed
	// took is every top-level test's time: the slowest are listed at the
	// end, because the suite must stay inside CI's 15 minutes.
	took []timed
}

// timed is a top-level test and how long it ran.
type timed struct {
	pkg, test string
	seconds   float64
}

// slowest is how many of the longest tests the summary lists.
const slowest = 10

func newReport(w io.Writer) *report {
	return &report{w: w, running: map[string]map[string]*topTest{}}
}

// read consumes the stream until EOF. A line that is not a test2json event
// is printed as it is.
func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Action == "" {
			fmt.Fprintln(r.w, sc.Text())
			continue
		}
		r.handle(ev)
	}
	return sc.Err()
}

func (r *report) handle(ev event) {
	switch {
	case ev.Action == "build-output":
		io.WriteString(r.w, ev.Output)
	case ev.Test == "" && ev.Action == "output":
		// -json is -v: these two lines are the verbose mode's, and the
		// "ok" line that follows says both.
		if ev.Output != "PASS\n" && ev.Output != "testing: warning: no tests to run\n" {
			io.WriteString(r.w, ev.Output)
		}
	case ev.Test == "" && (ev.Action == "pass" || ev.Action == "fail" || ev.Action == "skip"):
		r.endPackage(ev.Package, ev.Action == "fail")
	case ev.Test != "":
		r.testEvent(ev)
	}
}

func topName(test string) string {
	top, _, _ := strings.Cut(test, "/")
	return top
}

func (r *report) testEvent(ev event) {
	tests := r.running[ev.Package]
	if tests == nil {
		tests = map[string]*topTest{}
		r.running[ev.Package] = tests
	}
	name := topName(ev.Test)
	t := tests[name]
	if t == nil {
		t = &topTest{outcome: map[string]string{}}
		tests[name] = t
	}
	switch ev.Action {
	case "output":
		if t.outcome[name] == "fail" {
			// After its end: a panic's trace. Printed, as go test does.
			io.WriteString(r.w, ev.Output)
			return
		}
		t.lines = append(t.lines, line{ev.Test, ev.Output})
	case "pass", "fail", "skip":
		t.outcome[ev.Test] = ev.Action
		if ev.Test == name {
			r.took = append(r.took, timed{ev.Package, name, ev.Elapsed})
		}
		if ev.Action == "skip" {
			r.skips = append(r.skips, testRef{ev.Package, ev.Test, skipReason(t.lines, ev.Test)})
		}
		if ev.Action == "fail" && ev.Test != name {
			t.failedSubs = append(t.failedSubs, ev.Test)
		}
		if ev.Test == name {
			if ev.Action == "fail" {
				r.failed(ev.Package, t, name)
				return // kept: a panic's trace may follow
			}
			delete(tests, name)
		}
	}
}

// failed prints a failed top-level test's output as plain go test does:
// each test's verdict, then what it logged, subtests indented below their
// parent; subtests that passed or skipped are left out, and so is the
// === RUN/PAUSE/CONT/NAME framing that -json adds. It lists the test, or
// its failed subtests, for the summary.
func (r *report) failed(pkg string, t *topTest, top string) {
	if len(t.failedSubs) == 0 {
		r.fails = append(r.fails, testRef{pkg: pkg, test: top})
	}
	for _, sub := range t.failedSubs {
		r.fails = append(r.fails, testRef{pkg: pkg, test: sub})
	}
	var order []string
	byTest := map[string][]string{}
	for _, l := range t.lines {
		if framing(l.text) {
			continue
		}
		if o := t.outcome[l.test]; l.test != top && (o == "pass" || o == "skip") {
			continue
		}
		if _, seen := byTest[l.test]; !seen {
			order = append(order, l.test)
		}
		byTest[l.test] = append(byTest[l.test], l.text)
	}
	for _, test := range order {
		indent := strings.Repeat("    ", strings.Count(test, "/"))
		lines := byTest[test]
		// -json (which is -v) prints the verdict last; go test, first.
		if i := slices.IndexFunc(lines, verdict); i > 0 {
			lines = append(append([]string{lines[i]}, lines[:i]...), lines[i+1:]...)
		}
		for _, text := range lines {
			io.WriteString(r.w, indent+text)
		}
	}
	t.lines = nil
}

func verdict(s string) bool {
	return strings.HasPrefix(s, "--- FAIL: ") || strings.HasPrefix(s, "--- PASS: ") || strings.HasPrefix(s, "--- SKIP: ")
}

// endPackage forgets the package's tests; when it failed, the output of
// tests that never ended (a timeout, a crash) is printed first.
func (r *report) endPackage(pkg string, failed bool) {
	if failed {
		for name, t := range r.running[pkg] {
			if t.outcome[name] == "" {
				r.failed(pkg, t, name)
			}
		}
	}
	delete(r.running, pkg)
}

var framingRE = regexp.MustCompile(`^=== (RUN|PAUSE|CONT|NAME)\s`)

func framing(s string) bool { return framingRE.MatchString(s) }

// logPrefix is what t.Log puts before a message: indentation and file:line.
var logPrefix = regexp.MustCompile(`^\s*\S+\.go:\d+: `)

// skipReason is what a test logged, its own lines only, without the
// file:line prefixes, joined on one line.
func skipReason(lines []line, test string) string {
	var parts []string
	for _, l := range lines {
		if l.test != test || framing(l.text) || strings.HasPrefix(strings.TrimSpace(l.text), "--- SKIP:") {
			continue
		}
		if s := strings.TrimSpace(logPrefix.ReplaceAllString(l.text, "")); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

// summary lists the slowest tests, the skipped ones, then the failed ones.
func (r *report) summary() {
	sort.SliceStable(r.took, func(i, j int) bool { return r.took[i].seconds > r.took[j].seconds })
	if n := min(len(r.took), slowest); n > 0 {
		fmt.Fprintf(r.w, "\n%d slowest:\n", n)
		for _, t := range r.took[:n] {
			fmt.Fprintf(r.w, "slow: %s (%s): %.1fs\n", t.test, t.pkg, t.seconds)
		}
	}
	if len(r.skips) > 0 {
		fmt.Fprintf(r.w, "\n%d skipped:\n", len(r.skips))
	}
	for _, s := range r.skips {
		fmt.Fprintf(r.w, "skipped: %s (%s): %s\n", s.test, s.pkg, s.reason)
	}
	if len(r.fails) > 0 {
		fmt.Fprintf(r.w, "\n%d failed:\n", len(r.fails))
	}
	for _, f := range r.fails {
		fmt.Fprintf(r.w, "failed: %s (%s)\n", f.test, f.pkg)
	}
}
