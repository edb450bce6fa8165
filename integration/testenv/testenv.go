// Package testenv decides what a test does when the machine lacks a tool
// it needs. Locally the test skips, saying what to install; with CI set
// (CI services set it, and .ci/run installs every tool the tests use) it
// fails, because there a test that skips would pass without running.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI, where .ci/run has installed
// everything they need.
func CI() bool { return os.Getenv("CI") != "" }

// Missing ends t for something the machine lacks: a skip with the reason,
// or a failure in CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI is set: .ci/run should have installed it)", msg)
	}
	t.Skip(msg)
}

// Command returns the path of the program name, or ends t through Missing
// naming the Debian package that has it.
func Command(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (Debian package %s; .ci/run installs it)", name, debianPackage)
	}
	return p
}
