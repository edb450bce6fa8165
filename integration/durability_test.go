package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/integration/testenv"
)

// TestDurabilityModes runs `volboot sync` under strace once per
// --durability and counts the calls that make data durable: "files" must
// fsync every file it unpacks and never call syncfs; "fs" must call
// syncfs and fsync far fewer files than it writes; "auto" must do what
// "fs" does on a local filesystem and what "files" does on FUSE. All
// converge to the same generation. A bad value is a usage error naming
// the flag.
func TestDurabilityModes(t *testing.T) {
	testenv.Command(t, "strace", "strace")
	if err := exec.Command("strace", "-qq", "-o", os.DevNull, "true").Run(); err != nil {
		t.Skipf("strace cannot trace here: %v", err)
	}
	var ids []string
	// One subtest per mode, so that a mode this machine cannot run (no
	// FUSE) is a skip that make test lists.
	for _, mode := range []string{"files", "fs", "close", "auto", "auto-on-fuse", "auto-on-moosefs"} {
		t.Run(mode, func(t *testing.T) {
			vol := ""
			moosefs := false
			switch mode {
			case "auto-on-fuse":
				vol = fuseVolume(t)
				mode = "auto"
			case "auto-on-moosefs":
				vol = mooseVolume(t, mooseRig(t).Clients()[0])[0]
				mode, moosefs = "auto", true
			}
			f := newFixture(t, vol)
			if mode == "auto" {
				// auto is fs where syncfs reaches storage, files elsewhere.
				var st unix.Statfs_t
				if err := unix.Statfs(f.vol, &st); err != nil {
					t.Fatal(err)
				}
				switch uint32(st.Type) {
				case unix.EXT4_SUPER_MAGIC, unix.TMPFS_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.OVERLAYFS_SUPER_MAGIC:
					mode = "auto=fs"
				case unix.FUSE_SUPER_MAGIC:
					// close on MooseFS, whose close flushes to the
					// chunkservers (fileops.isMooseFS); files on other
					// FUSE servers (bindfs here).
					mode = "auto=files"
					if moosefs {
						mode = "auto=close"
					}
				default:
					t.Skipf("no expectation for auto on filesystem type %#x", st.Type)
				}
			}
			ws := f.add(synthstack.Small("dur", 4, 30)...)
			f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
			files := 0
			for _, w := range ws {
				files += w.Files
			}
			trace := filepath.Join(t.TempDir(), "trace")
			c := f.command("sync", "--durability", strings.Split(mode, "=")[0])
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
			switch strings.TrimPrefix(mode, "auto=") {
			case "files":
				if fsyncs < files || syncfs != 0 {
					t.Errorf("--durability files: %d fsync and %d syncfs for %d files; want an fsync per file and no syncfs", fsyncs, syncfs, files)
				}
			case "fs":
				if syncfs == 0 || fsyncs >= files/2 {
					t.Errorf("--durability fs: %d fsync and %d syncfs for %d files; want syncfs and few fsyncs", fsyncs, syncfs, files)
				}
			case "close":
				// Only volboot's own records (manifests, markers, state,
				// written by atomicfile) are fsynced, as under fs: no
				// store or generation file or directory.
				if syncfs != 0 || fsyncs >= files/2 {
					t.Errorf("--durability close: %d fsync and %d syncfs for %d files; want neither for the store and generations", fsyncs, syncfs, files)
				}
			}
		})
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("generation ids differ by durability: %v", ids)
		}
	}

	for _, bad := range []string{"none", "always", "Close"} {
		r := volboot(t, t.TempDir(), nil, "sync", "--volume", t.TempDir(), "--durability", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "--durability") {
			t.Errorf("--durability %s: exit %d, want 2 naming the flag\n%s", bad, r.code, r.stderr)
		}
	}
}

// fuseVolume mounts an empty directory through bindfs (a FUSE passthrough,
// standing in for RunPod's MooseFS) and returns the mount point, unmounted
// when the test ends. Without bindfs or FUSE the test skips (fails in CI,
// whose MooseFS tests need FUSE anyway).
func fuseVolume(t *testing.T) string {
	t.Helper()
	testenv.Command(t, "bindfs", "bindfs")
	src, mnt := t.TempDir(), t.TempDir()
	if out, err := exec.Command("bindfs", "--no-allow-other", src, mnt).CombinedOutput(); err != nil {
		testenv.Missing(t, "cannot mount FUSE here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := exec.Command("fusermount", "-u", mnt).Run(); err != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}
