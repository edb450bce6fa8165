package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// TestManifestLockDisagreementRefused: sync, run and status refuse a
// manifest whose requirements the lock does not meet (a package the lock
// lacks, a pin the lock contradicts) with manifest check's own lines,
// before anything is downloaded (issue 15, item 3). Before, sync installed
// the lock without them and said the group was installed.
func TestManifestLockDisagreementRefused(t *testing.T) {
	f := newFixture(t, fastDir(t))
	ws := f.add(synthstack.Small("pair", 2, 3)...)
	cases := []struct {
		name string
		reqs []string
		want string
	}{
		{"absent", append(requirements(ws...), "numpy"), "numpy is not in the lock"},
		{"other-version", append([]string{ws[0].Spec.Name + "==9.9.9"}, requirements(ws[1:]...)...), "is not satisfied by the lock, which has " + ws[0].Spec.Name + " " + ws[0].Spec.Version},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: tc.reqs}}, f.entries("core", ws...))
			check := volboot(t, f.work, nil, "manifest", "check", f.manifest())
			if check.code != 2 || !strings.Contains(check.stdout, tc.want) {
				t.Fatalf("manifest check: exit %d\n%s%s", check.code, check.stdout, check.stderr)
			}
			for _, cmd := range []string{"sync", "status", "run"} {
				var more []string
				if cmd == "run" {
					more = []string{"--", "python3", "-c", "pass"}
				}
				r := f.run(cmd, more...)
				if r.code != 2 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "problem(s) between the manifest and its lock") ||
					!strings.Contains(r.stderr, f.manifest()+":") {
					t.Fatalf("%s of a manifest the lock does not meet: exit %d, want 2 naming %q\nstdout:\n%s\nstderr:\n%s", cmd, r.code, tc.want, r.stdout, r.stderr)
				}
			}
			for _, w := range ws {
				if st := f.stats(w); st.Requests != 0 {
					t.Fatalf("%s was requested %d times: the pair must be refused before any download", w.Filename, st.Requests)
				}
			}
		})
	}
	// The agreeing pair still syncs.
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	f.sync()
}

// nobody is the user the read-only tests run volboot as; they need root to
// switch to it.
func nobody(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run volboot as another user (CI runs as root)")
	}
	return &syscall.Credential{Uid: 65534, Gid: 65534}
}

// openUp makes the fixture's files readable and its directories searchable
// by every user, as a volume and an image's files are to a worker running
// under another uid (temporary directories are made 0700).
func openUp(t *testing.T, f *fixture) {
	t.Helper()
	for _, d := range []string{f.vol, filepath.Dir(f.work), filepath.Dir(filepath.Dir(f.work))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.pyLog, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.pyLog, 0o666); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeNotWritable: a worker that may read the volume but not write
// it (a read-only mount, or a volume owned by another user) still serves a
// complete generation, warning that gc cannot see it; status never writes
// (not even the interpreter cache); and a HOME this user cannot enter has
// no netrc rather than a fatal one (issue 15, item 5).
func TestVolumeNotWritable(t *testing.T) {
	cred := nobody(t)
	f := newFixture(t, fastDir(t))
	// The interpreter must be one every user may run (python3 on PATH may
	// live under /root, as pyenv's does here).
	const system = "/usr/bin/python3"
	if _, err := os.Stat(system); err != nil {
		t.Skipf("no %s to run as another user: %v", system, err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\necho \"$$ $*\" >> %s\nexec %s \"$@\"\n", f.pyLog, system)
	if err := os.WriteFile(f.python, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	ws := f.add(synthstack.Small("ro", 2, 3)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	f.sync()
	openUp(t, f)
	cache := filepath.Join(f.vol, ".volboot", "cache", "interp")
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if st, r := f.status(); !st.InSync {
		t.Fatalf("status as root after sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("status wrote the interpreter cache %s (%v): status must write nothing", cache, err)
	}

	f.cred = cred
	f.env = append(f.env, "HOME=/root") // 0700, root's: nobody cannot look inside
	if fi, err := os.Stat("/root"); err != nil || fi.Mode().Perm()&0o001 != 0 {
		t.Skipf("/root is searchable by others here (%v); the closed-HOME case needs it closed", err)
	}
	if st, r := f.status(); !st.InSync {
		t.Fatalf("status as another user: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	out := filepath.Join(t.TempDir(), "served")
	if err := os.Chmod(filepath.Dir(out), 0o777); err != nil {
		t.Fatal(err)
	}
	r := f.run("run", "--", "python", "-c", fmt.Sprintf("import %s; open(%q, 'w').write('ok')", ws[0].Spec.Module(), out))
	if r.code != 0 {
		t.Fatalf("run on a volume this user cannot write: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "ok" {
		t.Fatalf("the handler did not run (%v)\n%s", err, r.stderr)
	}
	if !strings.Contains(r.stderr, "holds no use-lease") {
		t.Fatalf("run did not warn that gc cannot see it:\n%s", r.stderr)
	}
	if leases, _ := filepath.Glob(filepath.Join(f.vol, ".volboot", "leases", "*")); len(leases) != 0 {
		t.Fatalf("leases %v", leases)
	}
}

// TestVolumeMustExist: a volume that does not exist is a volume that did
// not attach, not a place to install onto the container's disk: sync, run,
// gc and status refuse it (exit 2, creating nothing) unless --create-volume
// or VOLBOOT_CREATE_VOLUME=1 asks; and a volume on the same filesystem as /
// inside a container is warned about (issue 15, item 4).
func TestVolumeMustExist(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("attach", 1, 2)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	f.vol = filepath.Join(t.TempDir(), "runpod-volume")
	f.env = []string{"VOLBOOT_CREATE_VOLUME=0"}
	for _, cmd := range [][]string{{"sync"}, {"status"}, {"gc"}, {"repair"}, {"run", "--", "python", "-c", "pass"}} {
		r := f.run(cmd[0], cmd[1:]...)
		if r.code != 2 || !strings.Contains(r.stderr, f.vol+" does not exist") || !strings.Contains(r.stderr, "--create-volume") {
			t.Fatalf("%s of a volume that does not exist: exit %d, want 2 saying so\n%s%s", cmd[0], r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(f.vol); !os.IsNotExist(err) {
			t.Fatalf("%s made the volume that does not exist (%v)", cmd[0], err)
		}
	}
	// status never makes it, even when asked.
	f.env = []string{"VOLBOOT_CREATE_VOLUME=1"}
	if r := f.run("status"); r.code != 2 || !strings.Contains(r.stderr, "does not exist") {
		t.Fatalf("status --create-volume of a missing volume: exit %d\n%s", r.code, r.stderr)
	}
	f.env = nil
	if r := f.run("sync", "--create-volume"); r.code != 0 {
		t.Fatalf("sync --create-volume: exit %d\n%s", r.code, r.stderr)
	}
	if st, r := f.status(); !st.InSync {
		t.Fatalf("status after sync --create-volume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// On the container's own disk: a warning, unless asked for.
	var sv, sr syscall.Stat_t
	if err := syscall.Stat(f.vol, &sv); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/", &sr); err != nil {
		t.Fatal(err)
	}
	if sv.Dev != sr.Dev {
		t.Skipf("the test's temporary directory is not on the filesystem of / here: the same-disk warning cannot be shown")
	}
	f.env = []string{"VOLBOOT_CREATE_VOLUME=0", "RUNPOD_POD_ID=test-pod"}
	r := f.run("sync")
	if r.code != 0 || !strings.Contains(r.stderr, "the volume is on the container's own disk") {
		t.Fatalf("sync of a volume on the container's disk: exit %d, want 0 with a warning\n%s", r.code, r.stderr)
	}
	f.env = []string{"VOLBOOT_CREATE_VOLUME=1", "RUNPOD_POD_ID=test-pod"}
	if r := f.run("sync"); r.code != 0 || strings.Contains(r.stderr, "container's own disk") {
		t.Fatalf("sync --create-volume still warned: exit %d\n%s", r.code, r.stderr)
	}
}
