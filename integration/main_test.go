// Package integration holds end-to-end tests of the built volboot binary:
// real processes, real files, the machine's python3, and a local index.
package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/lockgen/lockgentest"
)

// volbootBin is the binary under test, built once by TestMain.
var volbootBin string

func TestMain(m *testing.M) {
	// Run as uv or python3 by `volboot lock` (lock_test.go).
	if lockgentest.IsFake() {
		os.Exit(lockgentest.Main())
	}
	dir, err := os.MkdirTemp("", "volboot-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Searchable by every user: some tests run volboot as another one.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	volbootBin = filepath.Join(dir, "volboot")
	build := exec.Command("go", "build", "-trimpath", "-o", volbootBin, "../cmd/volboot")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build volboot: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	closeMooseRig(code != 0)
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of volboot did.
type result struct {
	code           int
	stdout, stderr string
}

// volboot runs the binary with args and extra environment, in dir.
func volboot(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(volbootBin, args...)
	cmd.Dir = dir
	// Test volumes are local directories on purpose (--create-volume).
	cmd.Env = append(os.Environ(), "VOLBOOT_LOG_FORMAT=json", "VOLBOOT_CREATE_VOLUME=1")
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run volboot %v: %v", args, err)
	}
	return r
}

// failures are the reasons volboot gave on stderr for its exit code: the
// text of each JSON log line that carries an exit_code (the tests run with
// VOLBOOT_LOG_FORMAT=json), and of each "volboot: " line, which the other
// log formats print.
func failures(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		var rec struct {
			Level    string `json:"level"`
			Msg      string `json:"msg"`
			ExitCode *int   `json:"exit_code"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "error" && rec.ExitCode != nil {
			out = append(out, rec.Msg)
		} else if msg, ok := strings.CutPrefix(line, "volboot: "); ok {
			out = append(out, msg)
		}
	}
	return out
}
