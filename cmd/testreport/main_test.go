package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// testdata/gotest.json is recorded `go test -json` output of a throwaway
// module: a passing package, one with a failing subtest, a test that
// panics, skips (one with a two-line reason, one with none), a package
// without tests, one that does not build, and a test killed by -timeout.
const recorded = "testdata/gotest.json"

func reportOf(t *testing.T) string {
	t.Helper()
	f, err := os.Open(recorded)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	r := newReport(&out)
	if err := r.read(f); err != nil {
		t.Fatal(err)
	}
	r.summary()
	return out.String()
}

func TestReportIsPlainGoTestOutputWithSkipsListed(t *testing.T) {
	out := reportOf(t)
	for _, want := range []string{
		// summaries
		"ok  \texample.com/trmod/pass\t",
		"?   \texample.com/trmod/nofiles\t[no test files]\n",
		"FAIL\texample.com/trmod/fail\t",
		// a failed subtest, laid out as plain go test does
		"--- FAIL: TestParent (0.00s)\n    fail_test.go:6: parent log\n    --- FAIL: TestParent/bad (0.00s)\n        fail_test.go:9: bad sub log\n        fail_test.go:10: want 1, got 2\n",
		// a panic, with its trace
		"--- FAIL: TestPanics (0.00s)\n    crash_test.go:6: before the panic\npanic: assignment to entry in nil map",
		"/tmp/trmod/crash/crash_test.go:8 +0x54\n",
		// a build failure
		"broken/broken_test.go:5:28: undefined: undefined\n",
		"FAIL\texample.com/trmod/broken [build failed]\n",
		// a timeout: the test never ends, its output is printed with the package's failure
		"    hang_test.go:11: waiting forever\npanic: test timed out after 1s\n",
		// the lists
		"\n3 skipped:\n" +
			"skipped: TestNeedsZsh (example.com/trmod/skip): zsh is not installed (.ci/run installs it)\n" +
			"skipped: TestShells/fish (example.com/trmod/skip): fish is not installed second line\n" +
			"skipped: TestNoReason (example.com/trmod/skip): (no reason given)\n",
		"failed: TestPanics (example.com/trmod/crash)\n",
		"failed: TestParent/bad (example.com/trmod/fail)\n",
		"failed: TestHangs (example.com/trmod/hang)\n",
		// the slowest tests first, so that a suite outgrowing CI's
		// minutes says where they went
		"slowest:\nslow: TestOK (example.com/trmod/pass): 12.5s\nslow: TestAlsoOK (example.com/trmod/fail): 3.2s\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, noise := range []string{"quiet when passing", "good sub log", "=== RUN", "--- PASS", "\nPASS\n", "failed: TestParent (", "failed: TestQuick"} {
		if strings.Contains(out, noise) {
			t.Errorf("report holds %q, which plain go test does not print", noise)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
}

// The exit code is the command's, the report printed whatever it is;
// a command that cannot start is 2.
func TestExitCodeIsTheCommands(t *testing.T) {
	for _, c := range []struct {
		script string
		code   int
	}{
		{"cat " + recorded, 0},
		{"cat " + recorded + "; exit 1", 1},
		{"cat " + recorded + "; exit 3", 3},
		{"cat " + recorded + "; kill -TERM $$", 128 + 15},
	} {
		var out, errb bytes.Buffer
		if code := run([]string{"sh", "-c", c.script}, &out, &errb); code != c.code {
			t.Errorf("%s: exit %d, want %d\n%s", c.script, code, c.code, errb.String())
		}
		if !strings.Contains(out.String(), "skipped: TestNeedsZsh") {
			t.Errorf("%s: no report:\n%s", c.script, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"/nonexistent/go", "test"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "/nonexistent/go") {
		t.Errorf("a command that cannot start: exit %d, %q", code, errb.String())
	}
}
