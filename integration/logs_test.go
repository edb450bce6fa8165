package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// logLines decodes volboot's JSON log lines (VOLBOOT_LOG_FORMAT=json).
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] != nil {
			out = append(out, m)
		}
	}
	return out
}

// An index of the manifest that none of the lock's URLs is under does
// nothing (volboot downloads the lock's URLs): a sync that downloads says
// so once, at info level; an index the wheels are under is not named.
func TestUnusedIndexIsNoted(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("ix", 1, 3)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	m, err := os.OpenFile(f.manifest(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(m, "\n[[index]]\nname = \"elsewhere\"\nurl = \"https://pypi.example.invalid/simple\"\n")
	fmt.Fprintf(m, "\n[[index]]\nname = \"local\"\nurl = %q\n", f.srv.URL+"/files/")
	// A package the lock says came from an index uses it, though its
	// files are elsewhere (PyPI's are on files.pythonhosted.org).
	fmt.Fprintf(m, "\n[[index]]\nname = \"origin\"\nurl = \"https://origin.example/simple\"\n")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(f.work, "pylock.toml")
	lock, err := os.ReadFile(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(lock, []byte("\nversion = "))
	if at < 0 {
		t.Fatalf("no version line in the lock:\n%s", lock)
	}
	lock = append(lock[:at:at], append([]byte("\nindex = \"https://origin.example/simple/\""), lock[at:]...)...)
	if err := os.WriteFile(lockPath, lock, 0o644); err != nil {
		t.Fatal(err)
	}
	r := f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var notes []string
	for _, l := range logLines(t, r.stderr) {
		if msg := l["msg"].(string); strings.Contains(msg, "is not used") {
			notes = append(notes, fmt.Sprintf("%s %s", l["level"], msg))
		}
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "info index elsewhere is not used") {
		t.Errorf("notes about unused indexes: %q, want one info line naming index elsewhere\n%s", notes, r.stderr)
	}
}
