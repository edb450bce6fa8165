package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// TestDurabilityModes runs `volboot sync` under strace once per
// --durability and counts the calls that make data durable: "files" must
// fsync every file it unpacks and never call syncfs; "fs" must call
// syncfs and fsync far fewer files than it writes. Both converge to the
// same generation. A bad value is a usage error naming the flag.
func TestDurabilityModes(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed (.ci/run installs it)")
	}
	if err := exec.Command("strace", "-qq", "-o", os.DevNull, "true").Run(); err != nil {
		t.Skipf("strace cannot trace here: %v", err)
	}
	var ids []string
	for _, mode := range []string{"files", "fs"} {
		f := newFixture(t, "")
		ws := f.add(synthstack.Small("dur", 4, 30)...)
		f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
		files := 0
		for _, w := range ws {
			files += w.Files
		}
		trace := filepath.Join(t.TempDir(), "trace")
		c := f.command("sync", "--durability", mode)
		c.Args = append([]string{"strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o", trace}, c.Args...)
		c.Path, _ = exec.LookPath("strace")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("--durability %s: %v\n%s", mode, err, out)
		}
		ids = append(ids, generationOf(t, string(out)))
		b, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		fsyncs := strings.Count(string(b), "fsync(") + strings.Count(string(b), "fdatasync(")
		syncfs := strings.Count(string(b), "syncfs(")
		t.Logf("--durability %s: %d files in the wheels, %d fsync, %d syncfs", mode, files, fsyncs, syncfs)
		switch mode {
		case "files":
			if fsyncs < files || syncfs != 0 {
				t.Errorf("--durability files: %d fsync and %d syncfs for %d files; want an fsync per file and no syncfs", fsyncs, syncfs, files)
			}
		case "fs":
			if syncfs == 0 || fsyncs >= files/2 {
				t.Errorf("--durability fs: %d fsync and %d syncfs for %d files; want syncfs and few fsyncs", fsyncs, syncfs, files)
			}
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("generation ids differ by durability: %s and %s", ids[0], ids[1])
	}

	for _, bad := range []string{"none", "always"} {
		r := volboot(t, t.TempDir(), nil, "sync", "--volume", t.TempDir(), "--durability", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "--durability") {
			t.Errorf("--durability %s: exit %d, want 2 naming the flag\n%s", bad, r.code, r.stderr)
		}
	}
}
