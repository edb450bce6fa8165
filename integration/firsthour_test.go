package integration

import (
	"strings"
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
