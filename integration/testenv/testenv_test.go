package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHelperNeedsMissingTool is the test the others run in a child
// process: it needs a program no machine has.
func TestHelperNeedsMissingTool(t *testing.T) {
	if os.Getenv("TESTENV_HELPER") != "1" {
		t.Skip("helper of TestMissingToolSkipsLocallyAndFailsInCI")
	}
	Command(t, "volboot-no-such-tool", "no-such-package")
	t.Log("ran past a missing tool")
}

// A missing tool skips the test locally, naming the Debian package, and
// fails it in CI.
func TestMissingToolSkipsLocallyAndFailsInCI(t *testing.T) {
	for _, c := range []struct {
		ci       string
		fails    bool
		verdict  string
		included string
	}{
		{"", false, "--- SKIP: TestHelperNeedsMissingTool", "Debian package no-such-package"},
		{"true", true, "--- FAIL: TestHelperNeedsMissingTool", "CI is set"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNeedsMissingTool$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_HELPER=1", "CI="+c.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.fails || !strings.Contains(string(out), c.verdict) || !strings.Contains(string(out), c.included) ||
			strings.Contains(string(out), "ran past") {
			t.Errorf("CI=%q: %v, want %s naming %q:\n%s", c.ci, err, c.verdict, c.included, out)
		}
	}
}
