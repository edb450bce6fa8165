package bootstrap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// deadPID is the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	return cmd.Process.Pid
}

// A dead builder's pack frames (locallayout/packframes.go) are a staging
// directory like a partial store entry or generation: set aside by no
// sync before it had the chance to resume them, and sent to the trash
// once a sync is done without them.
func TestPackFramesAreStaging(t *testing.T) {
	c := &Config{Paths: Paths{Root: t.TempDir()}}
	c.defaults()
	host, _ := os.Hostname()
	dead := func(final string) string {
		name := "." + final + ".vbtmp." + atomicfile.HostToken(host) + "." + strconv.Itoa(deadPID(t)) + ".0123456789abcdef0123"
		p := filepath.Join(c.Paths.Packs(), name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	frames := dead("gen1-0123456789abcdef0123456789abcdef.partial")
	other := dead("gen1-new.pack")

	c.setAsideLeftovers()
	if _, err := os.Stat(frames); err != nil {
		t.Fatalf("a dead builder's pack frames were set aside before a sync could resume them: %v", err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Fatal("a dead writer's other leftover in the packs directory stays")
	}
	if got := c.stagingDirs(false); len(got) != 1 || got[0] != frames {
		t.Fatalf("staging directories %v, want %s", got, frames)
	}
	c.trashUnwanted()
	if _, err := os.Stat(frames); err == nil {
		t.Fatal("pack frames nobody resumed stay after the sync")
	}
	if n := c.trash().Items(); n != 2 {
		t.Fatalf("%d items in the trash, want both leftovers", n)
	}
}
