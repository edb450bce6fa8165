package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// An import that does not finish in time is inconclusive (TimedOut), not a
// failure like one that raises; neither is reported as passed. One that
// leaves a process behind holding its output (and the report's pipe)
// passes without waiting for it.
func TestSmokeTimeoutIsInconclusive(t *testing.T) {
	dir := t.TempDir()
	python := filepath.Join(dir, "python")
	script := `#!/bin/sh
case "$4" in
"slow") exec sleep 30 ;;
"broken") echo "ModuleNotFoundError: No module named 'gone'" >&2; exit 1 ;;
"daemon") sleep 30 & exit 0 ;;
esac
exit 0
`
	if err := os.WriteFile(python, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var passed []string
	t0 := time.Now()
	failures := smokeCheck(context.Background(), python, []smokeImport{
		{Group: "g", Package: "slow", Module: "slow"},
		{Group: "g", Package: "broken", Module: "broken"},
		{Group: "g", Package: "fine", Module: "fine"},
		{Group: "g", Package: "daemon", Module: "daemon"},
	}, 4, 500*time.Millisecond, func(im smokeImport, _ []byte) {
		mu.Lock()
		passed = append(passed, im.Module)
		mu.Unlock()
	})
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the smoke check took %s: the slow import was not stopped at its timeout, or the daemon's held output was waited for", d)
	}
	sort.Strings(passed)
	if len(passed) != 2 || passed[0] != "daemon" || passed[1] != "fine" {
		t.Errorf("passed %q, want daemon and fine", passed)
	}
	if len(failures) != 2 {
		t.Fatalf("failures %+v, want broken and slow", failures)
	}
	broken, slow := failures[0], failures[1]
	if broken.Module != "broken" || broken.TimedOut || !strings.Contains(broken.Reason, "No module named 'gone'") {
		t.Errorf("broken: %+v, want a failure naming the error", broken)
	}
	if slow.Module != "slow" || !slow.TimedOut || !strings.Contains(slow.Reason, "did not finish within 500ms") {
		t.Errorf("slow: %+v, want inconclusive (timed out)", slow)
	}
}
