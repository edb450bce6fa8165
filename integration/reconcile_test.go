package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/fakehub"
	"github.com/volboot/volboot/integration/testindex"
)

// TestSyncConverges syncs ~20 synthetic wheels plus the machine's real pip
// onto an empty volume, then checks what DESIGN.md promises about the
// result: status agrees, the second boot starts no process, --verify finds
// nothing, venv is a relative link, and the generation keeps working after
// the volume is moved.
func TestSyncConverges(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("conv", 20, 24)...)
	pip := f.addPip()
	all := append(ws, pip)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(all...)}}, f.entries("core", all...))

	id := f.sync()
	for _, w := range all {
		if s := f.stats(w); s.Bytes != w.Size {
			t.Errorf("%s: index served %d bytes, the wheel has %d", w.Filename, s.Bytes, w.Size)
		}
	}

	st, r := f.status()
	if !st.InSync || st.Generation == nil || *st.Generation != id {
		t.Fatalf("status after sync: want in sync at %s\n%s", id, r.stdout)
	}
	if state, _ := st.group("core"); state != "installed" || len(st.Drift) != 0 {
		t.Fatalf("status after sync: core %q, drift %v", state, st.Drift)
	}

	// The second boot is the fast path: no interpreter is started.
	before := f.pythonStarts()
	if before == 0 {
		t.Fatal("the interpreter wrapper was never started: the test cannot tell the fast path apart")
	}
	if id2 := f.sync(); id2 != id {
		t.Fatalf("second sync: generation %s, first %s", id2, id)
	}
	if n := f.pythonStarts(); n != before {
		t.Errorf("the in-sync sync started the interpreter %d times", n-before)
	}

	st, r = f.status("--verify")
	if !st.InSync || !st.Verified || len(st.Drift) != 0 {
		t.Fatalf("status --verify: %s%s", r.stdout, r.stderr)
	}

	link, err := os.Readlink(filepath.Join(f.vol, "venv"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.IsAbs(link) || filepath.Clean(link) != filepath.Join(".volboot", "envs", id) {
		t.Errorf("venv -> %q, want the relative .volboot/envs/%s", link, id)
	}

	// Move the volume: the generation must not know where it was.
	moved := f.vol + "-moved"
	if err := os.Rename(f.vol, moved); err != nil {
		t.Fatal(err)
	}
	f.vol = moved
	gen := filepath.Join(moved, ".volboot", "envs", id)
	var imports []string
	for _, w := range all {
		imports = append(imports, w.Spec.Module())
	}
	py := exec.Command(filepath.Join(gen, "bin", "python"), "-c", "import sys, "+strings.Join(imports, ", ")+"; import pip; print(pip.__file__); print(sys.prefix)")
	out, err := py.CombinedOutput()
	if err != nil {
		t.Fatalf("import in the moved generation: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), gen) {
		t.Errorf("the moved generation's python does not run from it:\n%s", out)
	}
	// A console script finds its interpreter relative to itself.
	out, err = exec.Command(filepath.Join(gen, "bin", "conv-00")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "conv-00" {
		t.Errorf("console script in the moved generation: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(moved, "venv", "bin", "python"), "-m", "pip", "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), pip.Spec.Version) {
		t.Errorf("pip through the moved venv link: %v\n%s", err, out)
	}
	// And volboot itself still sees the moved volume in sync, without a probe.
	before = f.pythonStarts()
	if id2 := f.sync(); id2 != id {
		t.Errorf("sync of the moved volume: generation %s, want %s", id2, id)
	}
	if n := f.pythonStarts(); n != before {
		t.Errorf("the moved volume's sync started the interpreter %d times", n-before)
	}

	// Someone pip-installs a package by hand into the volume's venv.
	extra, err := synthstack.Write(t.TempDir(), []synthstack.Spec{{Name: "by-hand", Version: "0.1", PyFiles: 1}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	pipIn := exec.Command(filepath.Join(moved, "venv", "bin", "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", extra[0].Path)
	if out, err := pipIn.CombinedOutput(); err != nil {
		t.Fatalf("pip install by hand: %v\n%s", err, out)
	}
	st, r = f.status()
	found := false
	for _, d := range st.Drift {
		found = found || d.Kind == "installed-by-hand" && strings.Contains(d.Package+d.Detail, "by_hand")
	}
	if st.InSync || !found {
		t.Errorf("status after a pip install by hand: want drift installed-by-hand naming by_hand\n%s", r.stdout)
	}
}

// degradeFixture is a required group of three wheels and one optional group
// per way an optional group can fail.
type degradeFixture struct {
	*fixture
	core                             []synthstack.Wheel
	gone, badHash, noImport, gpuOnly synthstack.Wheel
}

func newDegradeFixture(t *testing.T) *degradeFixture {
	f := &degradeFixture{fixture: newFixture(t, "")}
	f.core = f.add(synthstack.Small("core", 3, 6)...)
	opt, err := synthstack.Write(f.wheels, []synthstack.Spec{
		{Name: "gone", Version: "1.0", PyFiles: 2},
		{Name: "badhash", Version: "1.0", PyFiles: 2},
		{Name: "noimport", Version: "1.0", PyFiles: 2, ImportError: true},
		{Name: "gpuonly", Version: "1.0", PyFiles: 2},
	}, 2)
	if err != nil {
		t.Fatal(err)
	}
	f.gone, f.badHash, f.noImport, f.gpuOnly = opt[0], opt[1], opt[2], opt[3]
	// gone is not served (404) until the test serves it.
	for _, w := range opt[1:] {
		f.serve(w)
	}
	// badhash: the lock pins bytes the index does not serve.
	hashEntry := f.entry(f.badHash, "hash")
	hashEntry.SHA256 = strings.Repeat("0f", 32)
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(f.core...)},
		{Name: "missing", Requirements: requirements(f.gone)},
		{Name: "hash", Requirements: requirements(f.badHash)},
		{Name: "import", Requirements: requirements(f.noImport)},
		{Name: "gpu", Requirements: requirements(f.gpuOnly), When: map[string]string{"compute-capability": ">=8.0"}},
	}, append(f.entries("core", f.core...),
		f.entry(f.gone, "missing"),
		hashEntry,
		f.entry(f.noImport, "import"),
		f.entry(f.gpuOnly, "gpu"),
	))
	probe := filepath.Join(f.work, "gpu.json")
	if err := os.WriteFile(probe, []byte(`{"driver": "550.54.15", "cuda": "12.4", "gpus": [{"name": "Tesla T4", "compute_capability": "7.5", "memory_mib": 15360}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f.env = append(f.env, "VOLBOOT_GPU_PROBE="+probe)
	return f
}

// TestOptionalGroupsDegrade: a 404, a hash mismatch, an import failure and
// an unmet `when` each leave the sync successful, the group degraded or
// skipped with its cause in status and in the handler's environment; the
// next sync does not retry them, repair does.
func TestOptionalGroupsDegrade(t *testing.T) {
	f := newDegradeFixture(t)
	r := f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := generationOf(t, r.stdout)

	// The causes as each path words them: the HTTP status, the digest
	// check, the module's own ImportError text, the probed capability.
	want := map[string]struct{ state, cause string }{
		"core":    {"installed", ""},
		"missing": {"degraded", "404"},
		"hash":    {"degraded", "sha256"},
		"import":  {"degraded", "synthetic noimport is built for another ABI"},
		"gpu":     {"skipped", "7.5"},
	}
	// Degraded optional groups waiting for their retry leave the volume as
	// good as it can be: in sync (exit 0), state degraded, each one a note.
	st, sr := f.status()
	if !st.InSync || st.State != "degraded" {
		t.Errorf("status right after a sync with degraded optional groups: in_sync %v, state %q, want in sync and degraded:\n%s", st.InSync, st.State, sr.stdout)
	}
	if human := f.run("status"); human.code != 0 || !strings.Contains(human.stdout, "in sync, degraded") || strings.Contains(human.stdout, "DRIFT") {
		t.Errorf("status: exit %d, want 0 saying in sync, degraded:\n%s", human.code, human.stdout)
	}
	for name, w := range want {
		state, reason := st.group(name)
		if state != w.state || !strings.Contains(reason, w.cause) {
			t.Errorf("group %s: %s %q, want %s with a reason naming %q", name, state, reason, w.state, w.cause)
		}
	}
	for _, name := range []string{"gone", "badhash", "noimport"} {
		if !strings.Contains(sr.stdout, name) {
			t.Errorf("status does not name package %s:\n%s", name, sr.stdout)
		}
	}
	degradedNotes := 0
	for _, d := range st.Notes {
		if d.Kind == "group-degraded" {
			degradedNotes++
		}
	}
	if degradedNotes != 3 || len(st.Drift) != 0 {
		t.Errorf("%d group-degraded notes, want 3 (skipped is not degraded), and no drift: notes %+v drift %+v", degradedNotes, st.Notes, st.Drift)
	}

	// The handler learns the same facts.
	env := handlerFacts(t, f.fixture)
	if env.Groups != "core" {
		t.Errorf("VOLBOOT_GROUPS=%q, want core", env.Groups)
	}
	for _, g := range []string{"missing=", "hash=", "import="} {
		if !strings.Contains(env.Degraded, g) {
			t.Errorf("VOLBOOT_DEGRADED=%q lacks %s", env.Degraded, g)
		}
	}
	if !strings.Contains(env.Degraded, "404") || !strings.Contains(env.Degraded, "another ABI") {
		t.Errorf("VOLBOOT_DEGRADED=%q does not say why", env.Degraded)
	}
	// The handler runs from its generation, not through the venv link
	// that the next sync may flip.
	genDir := filepath.Join(f.vol, ".volboot", "envs", id)
	if env.VirtualEnv != genDir || env.Prefix != genDir {
		t.Errorf("handler VIRTUAL_ENV=%s sys.prefix=%s, want both %s", env.VirtualEnv, env.Prefix, genDir)
	}
	caps := env.Capabilities
	if caps.Generation != id {
		t.Errorf("capabilities generation %q, want %s", caps.Generation, id)
	}
	capState := map[string]string{}
	for _, g := range caps.Groups {
		capState[g.Name] = g.State
	}
	for name, w := range want {
		if capState[name] != w.state {
			t.Errorf("capabilities: group %s is %q, want %s", name, capState[name], w.state)
		}
	}
	if !strings.Contains(string(caps.GPU), "7.5") {
		t.Errorf("capabilities carry no GPU facts: %s", caps.GPU)
	}

	// The next boot is the fast path: degraded groups wait for their back-off.
	before, goneReqs := f.pythonStarts(), f.stats(f.gone).Requests
	if id2 := f.sync(); id2 != id {
		t.Errorf("second sync: generation %s, want %s", id2, id)
	}
	if n := f.pythonStarts(); n != before {
		t.Errorf("the second sync started the interpreter %d times: it retried", n-before)
	}
	if n := f.stats(f.gone).Requests; n != goneReqs {
		t.Errorf("the second sync asked for the 404 wheel again (%d requests)", n-goneReqs)
	}

	// Once a retry is due, a sync would change the volume: that is drift.
	dueState(t, filepath.Join(f.vol, ".volboot", "state.json"), id, "missing")
	st, sr = f.status()
	due := 0
	for _, d := range st.Drift {
		if d.Kind == "group-retry-due" && strings.HasPrefix(d.Detail, "missing:") {
			due++
		}
	}
	if st.InSync || st.State != "drift" || due != 1 {
		t.Errorf("status with a retry due: in_sync %v, state %q, %d group-retry-due, want drift naming group missing:\n%s", st.InSync, st.State, due, sr.stdout)
	}

	// Fix the index, then repair: the missing group is retried and installed.
	f.serve(f.gone)
	r = f.run("repair")
	if r.code != 0 {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if f.stats(f.gone).Requests == 0 {
		t.Error("repair did not fetch the wheel that 404ed")
	}
	st, sr = f.status()
	if state, reason := st.group("missing"); state != "installed" {
		t.Errorf("after repair, group missing is %s %q\n%s", state, reason, sr.stdout)
	}
	if state, _ := st.group("import"); state != "degraded" {
		t.Errorf("after repair, group import is %s, want still degraded", state)
	}
}

// TestRequiredGroupFails: a required group's failure fails the sync with
// exit 1 and one message naming the group, the package and the cause; what
// was fetched for the other groups is kept for the next sync.
func TestRequiredGroupFails(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("req", 3, 6)...)
	opt := f.add(synthstack.Spec{Name: "req-extra", Version: "1.0", PyFiles: 3})[0]
	gone, err := synthstack.Write(f.wheels, []synthstack.Spec{{Name: "vanished", Version: "2.0", PyFiles: 2}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: append(requirements(ws...), "vanished==2.0")},
		{Name: "extra", Requirements: requirements(opt)},
	}, append(f.entries("core", append(ws, gone[0])...), f.entry(opt, "extra")))
	r := f.run("sync")
	if r.code != 1 {
		t.Fatalf("sync: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	var msgs []string
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "required group") {
			msgs = append(msgs, line)
		}
	}
	if len(msgs) != 1 {
		t.Fatalf("want one message about the required group, got %d:\n%s", len(msgs), r.stderr)
	}
	for _, want := range []string{"core", "vanished", "404"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("message does not name %q: %s", want, msgs[0])
		}
	}
	if st, sr := f.status(); st.InSync {
		t.Errorf("status in sync after a failed required group:\n%s", sr.stdout)
	}

	// Everything else was kept: once the wheel is back, the next sync
	// downloads only it.
	f.serve(gone[0])
	f.sync()
	for _, w := range append(ws, opt, gone[0]) {
		if s := f.stats(w); s.Bytes != w.Size {
			t.Errorf("%s: %d bytes served over both syncs for a %d-byte wheel", w.Filename, s.Bytes, w.Size)
		}
	}
	if st, sr := f.status(); !st.InSync {
		t.Errorf("status after the second sync:\n%s", sr.stdout)
	}
}

// facts is what a handler started by `volboot run` sees.
type facts struct {
	Groups, Degraded   string
	VirtualEnv, Prefix string
	Capabilities       struct {
		Generation string `json:"generation"`
		Groups     []struct {
			Name, State, Reason string
		} `json:"groups"`
		GPU json.RawMessage `json:"gpu"`
	}
}

// handlerFacts runs a tiny handler under `volboot run` that prints its
// VOLBOOT_* environment and the capabilities file.
func handlerFacts(t *testing.T, f *fixture) facts {
	t.Helper()
	out := filepath.Join(t.TempDir(), "facts.json")
	script := fmt.Sprintf(`import json, os
caps = json.load(open(os.environ["VOLBOOT_CAPABILITIES"]))
import sys
json.dump({"Groups": os.environ["VOLBOOT_GROUPS"], "Degraded": os.environ["VOLBOOT_DEGRADED"], "Capabilities": caps,
           "VirtualEnv": os.environ["VIRTUAL_ENV"], "Prefix": sys.prefix}, open(%q, "w"))
`, out)
	r := f.run("run", "--", "python", "-c", script)
	if r.code != 0 {
		t.Fatalf("volboot run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the handler wrote nothing: %v\n%s", err, r.stderr)
	}
	var fc facts
	if err := json.Unmarshal(data, &fc); err != nil {
		t.Fatalf("handler facts: %v\n%s", err, data)
	}
	return fc
}

// TestConcurrentSyncs starts 8 syncs at once on an empty volume: all agree
// on the generation and, under the volume lock, each wheel is downloaded
// once. With the lock off (VOLBOOT_LOCK_MODE=off), duplicate work is
// allowed but nothing breaks: every sync exits 0 with the same generation
// and status --verify is clean.
func TestConcurrentSyncs(t *testing.T) {
	for _, c := range []struct {
		name, mode string
		n          int
		stall      time.Duration // per response, so that downloads overlap
		gate       string        // run only when this variable is set
	}{
		{name: "flock", mode: "flock", n: 8, stall: 150 * time.Millisecond},
		{name: "off", mode: "off", n: 8},
		// Two writers that both believe they hold the lock (DESIGN.md §1:
		// flock on a network filesystem), downloading at the same time.
		{name: "off-2-overlapping", mode: "off", n: 2, stall: 150 * time.Millisecond},
		// Eight such writers keep replacing each other's part files; the
		// reconciler fetches a lost race again until one verified file is
		// in place.
		{name: "off-8-overlapping", mode: "off", n: 8, stall: 150 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.gate != "" && os.Getenv(c.gate) == "" {
				t.Skipf("known fetch limitation; set %s=1 to run", c.gate)
			}
			mode := c.mode
			f := newFixture(t, "")
			ws := f.add(synthstack.Small("conc", 10, 30)...)
			f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
			f.env = append(f.env, "VOLBOOT_LOCK_MODE="+mode)
			for _, w := range ws {
				if err := f.index.SetFault(testindex.FileURLPath(w.Filename), testindex.Fault{Stall: c.stall, StallAfter: 2048}); c.stall > 0 && err != nil {
					t.Fatal(err)
				}
			}
			n := c.n
			results := make([]result, n)
			cmds := make([]*exec.Cmd, n)
			outs := make([]*strings.Builder, n)
			errs := make([]*strings.Builder, n)
			for i := range cmds {
				cmds[i] = f.command("sync")
				outs[i], errs[i] = &strings.Builder{}, &strings.Builder{}
				cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
			}
			var wg sync.WaitGroup
			for i, c := range cmds {
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := c.Wait()
					results[i] = result{code: c.ProcessState.ExitCode(), stdout: outs[i].String(), stderr: errs[i].String()}
					_ = err
				}()
			}
			wg.Wait()
			var ids []string
			for i, r := range results {
				if r.code != 0 {
					t.Fatalf("sync %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
				}
				ids = append(ids, generationOf(t, r.stdout))
			}
			for _, id := range ids[1:] {
				if id != ids[0] {
					t.Fatalf("syncs disagree on the generation: %v", ids)
				}
			}
			var served, total int64
			for _, w := range ws {
				served += f.stats(w).Bytes
				total += w.Size
			}
			t.Logf("%s: %d syncs, the index served %d bytes for %d bytes of wheels", c.name, n, served, total)
			for _, w := range ws {
				s := f.stats(w)
				if mode == "flock" && (s.Requests != 1 || s.Bytes != w.Size) {
					t.Errorf("%s: %d requests, %d bytes served for a %d-byte wheel; want it served once", w.Filename, s.Requests, s.Bytes, w.Size)
				}
			}
			st, r := f.status("--verify")
			if !st.InSync || len(st.Drift) != 0 || *st.Generation != ids[0] {
				t.Fatalf("status --verify after %d concurrent syncs:\n%s%s", n, r.stdout, r.stderr)
			}
			py := filepath.Join(f.vol, ".volboot", "envs", ids[0], "bin", "python")
			if out, err := exec.Command(py, "-c", "import conc_00, conc_09").CombinedOutput(); err != nil {
				t.Errorf("import: %v\n%s", err, out)
			}
		})
	}
}

// mountTmpfs mounts a tmpfs of size at a new directory, or skips the test
// saying why (not root, no mount permission in this container).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// diskFullStack is four wheels of one incompressible 1.5 MB library each:
// 6 MB to download, 6 MB more to unpack.
func diskFullStack(t *testing.T, vol string) (*fixture, []synthstack.Wheel) {
	f := newFixture(t, vol)
	var specs []synthstack.Spec
	for i := 0; i < 4; i++ {
		specs = append(specs, synthstack.Spec{Name: fmt.Sprintf("heavy-%d", i), Version: "1.0", PyFiles: 3, Blobs: 1, BlobSize: 1536 << 10, Seed: uint64(i)})
	}
	ws := f.add(specs...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	return f, ws
}

// TestDiskTooSmallFailsAtPreflight: a volume that cannot hold the stack is
// refused before the first byte is downloaded, saying what is needed and
// what is free.
func TestDiskTooSmallFailsAtPreflight(t *testing.T) {
	vol := mountTmpfs(t, "3m")
	f, ws := diskFullStack(t, vol)
	r := f.run("sync")
	if r.code != 1 {
		t.Fatalf("sync on a 3 MB volume: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	msg := lastLine(r.stderr)
	if !strings.Contains(msg, "not enough space") || !strings.Contains(msg, "need") || !strings.Contains(msg, "free") {
		t.Errorf("the error does not say needed vs free: %s", msg)
	}
	for _, w := range ws {
		if s := f.stats(w); s.Requests != 0 || s.Bytes != 0 {
			t.Errorf("%s: %d requests, %d bytes served before the preflight refused", w.Filename, s.Requests, s.Bytes)
		}
	}
}

// TestDiskFillsDuringUnpack: the downloads fit, the unpacked files do not
// (--volume-size lies to get past the preflight). The error is clear,
// nothing is recorded as complete, and after the volume grows the next sync
// converges, downloads nothing it had verified, and leaves nothing behind.
func TestDiskFillsDuringUnpack(t *testing.T) {
	diskFills(t, "9m", false)
}

// TestDiskFillsDuringDownload: the last wheel's download is held back
// until the others have unpacked and filled the volume, so the disk fills
// under a download. The error says the same, and the volume converges
// once it grows.
func TestDiskFillsDuringDownload(t *testing.T) {
	diskFills(t, "10m", true)
}

func diskFills(t *testing.T, size string, lateDownload bool) {
	vol := mountTmpfs(t, size)
	f, ws := diskFullStack(t, vol)
	if lateDownload {
		if err := f.index.SetFault(testindex.FileURLPath(ws[3].Filename), testindex.Fault{Stall: 2 * time.Second, StallAfter: 1000, Times: 1}); err != nil {
			t.Fatal(err)
		}
	}
	r := f.run("sync", "--volume-size", "1G")
	if r.code != 1 {
		t.Fatalf("sync on a %s volume: exit %d, want 1\n%s%s", size, r.code, r.stdout, r.stderr)
	}
	if lateDownload && !strings.Contains(r.stderr, "download "+ws[3].Spec.Name) {
		t.Errorf("the held-back download did not meet the full disk:\n%s", r.stderr)
	}
	// The message may span lines (one per wheel that did not fit).
	msg := strings.Join(failures(r.stderr), "\n")
	for _, want := range []string{"the volume is full", "no space left on device", "grow the volume"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	// Wheels unpack as their downloads land, so the disk may fill under a
	// download as well as under an unpack. What is verified and in the
	// cache must never be downloaded again.
	served := map[string]int64{}
	var kept []synthstack.Wheel
	for _, w := range ws {
		served[w.Filename] = f.stats(w).Bytes
		if _, err := os.Stat(filepath.Join(vol, "cache", "wheels", w.SHA256+".whl")); err == nil {
			kept = append(kept, w)
		}
	}
	if len(kept) == 0 {
		t.Fatalf("no download survived the full disk (served %v): the test no longer fills the disk during the unpack", served)
	}
	if st, sr := f.status(); st.InSync || st.Generation != nil {
		t.Errorf("status after the disk filled:\n%s", sr.stdout)
	}
	// The generation built while the wheels unpacked (§5.3) may have left
	// its staging directory, under a temporary name no reader takes for a
	// generation, for the next sync to complete; nothing else.
	ents, _ := os.ReadDir(filepath.Join(vol, ".volboot", "envs"))
	for _, e := range ents {
		if _, staging := atomicfile.ParseTempName(e.Name()); !staging || !strings.Contains(e.Name(), wheel.PartialSuffix) {
			t.Errorf("a generation after the disk filled: %s", e.Name())
		}
	}
	if _, err := os.Lstat(filepath.Join(vol, "venv")); err == nil {
		t.Error("venv exists after the disk filled")
	}

	if out, err := exec.Command("mount", "-o", "remount,size=64m", vol).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	id := f.sync()
	st, sr := f.status("--verify")
	if !st.InSync || *st.Generation != id || len(st.Drift) != 0 {
		t.Fatalf("status --verify after growing the volume:\n%s%s", sr.stdout, sr.stderr)
	}
	for _, w := range kept {
		if s := f.stats(w); s.Bytes != served[w.Filename] {
			t.Errorf("%s: %d bytes served in all, %d before the volume grew: the verified download was not reused", w.Filename, s.Bytes, served[w.Filename])
		}
	}
	for _, w := range ws {
		if s := f.stats(w); s.Bytes > served[w.Filename]+w.Size {
			t.Errorf("%s: %d bytes served in all, %d before the volume grew: downloaded more than once more", w.Filename, s.Bytes, served[w.Filename])
		}
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestSecretsNeverLogged: credentials in a lock URL's userinfo, in
// VOLBOOT_AUTH_<HOST> and in HF_TOKEN are used, and appear nowhere in what
// volboot prints, at debug level, in JSON logs, even in error messages
// about the very URLs that carry them.
func TestSecretsNeverLogged(t *testing.T) {
	const (
		urlSecret  = "urlsekrit-4f1c"
		authSecret = "authsekrit-9b2e"
		hfSecret   = "hf_sekrit-77aa"
	)
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("sec", 3, 4)...)
	gone := synthstack.Spec{Name: "sec-gone", Version: "1.0"}
	withUserinfo := func(e synthstack.Entry) synthstack.Entry {
		e.URL = strings.Replace(e.URL, "http://", "http://someone:"+urlSecret+"@", 1)
		return e
	}
	entries := []synthstack.Entry{withUserinfo(f.entry(ws[0], "core")), f.entry(ws[1], "core"), f.entry(ws[2], "core"),
		withUserinfo(synthstack.Entry{Name: gone.Name, Version: gone.Version, Filename: gone.Filename(),
			URL: f.srv.URL + "/files/" + gone.Filename(), SHA256: strings.Repeat("12", 32), Size: 100, Group: "extra"})}
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(ws...)},
		{Name: "extra", Requirements: []string{"sec-gone"}},
	}, entries)

	// A gated model on a fake hub: it only downloads with HF_TOKEN.
	// Index, hub and CDN on three loopback addresses, so that each
	// credential has exactly one host it belongs to.
	hub := fakehub.New(fakehub.Options{})
	cdn := serveOn(t, "127.0.0.2", hub.CDN())
	hub.SetCDNURL(cdn.URL)
	if _, err := hub.Commit("model", "volboot/secret-voice", map[string]fakehub.File{
		"voice.bin": {Content: fakehub.Bytes(bytes.Repeat([]byte("voice"), 1000)), LFS: true},
	}, "main"); err != nil {
		t.Fatal(err)
	}
	if err := hub.RequireToken("model", "volboot/secret-voice", hfSecret); err != nil {
		t.Fatal(err)
	}
	hubSrv := serveOn(t, "127.0.0.3", hub)
	m, err := os.OpenFile(f.manifest(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(m, "\n[[model]]\nrepo = \"volboot/secret-voice\"\nrevision = \"main\"\nfiles = [\"voice.bin\"]\ngroup = \"core\"\n")
	m.Close()

	f.env = append(f.env, "HF_ENDPOINT="+hubSrv.URL, "HF_TOKEN="+hfSecret, "VOLBOOT_AUTH_127_0_0_1=someone:"+authSecret)
	r := f.run("sync", "-v", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st, sr := f.status()
	if state, reason := st.group("extra"); state != "degraded" || !strings.Contains(reason, "404") || !strings.Contains(reason, "/files/"+gone.Filename()) {
		t.Errorf("group extra: %s %q, want degraded by the 404, naming the URL", state, reason)
	} else {
		t.Logf("the reason names the URL that carries a password: %s", reason)
	}
	if len(r.stderr) < 200 {
		t.Errorf("suspiciously little debug logging to search:\n%s", r.stderr)
	}
	for _, secret := range []string{urlSecret, authSecret, hfSecret} {
		for name, text := range map[string]string{"sync stdout": r.stdout, "sync stderr": r.stderr, "status": sr.stdout + sr.stderr} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows the secret %q:\n%s", name, secret, text)
			}
		}
	}
	// The secrets were really in play: the index got credentials, the
	// gated model was fetched, and the CDN never saw the token.
	var sawCreds bool
	for _, a := range f.authHeaders() {
		if user, ok := strings.CutPrefix(a, "Basic "); ok {
			dec, _ := base64.StdEncoding.DecodeString(user)
			sawCreds = sawCreds || strings.Contains(string(dec), urlSecret) || strings.Contains(string(dec), authSecret)
		}
	}
	if !sawCreds {
		t.Errorf("the index never received the credentials: %q", f.authHeaders())
	}
	if hs := hub.Stats(); hs.CDNBytes == 0 || hs.CDNWithAuth != 0 {
		t.Errorf("hub stats %+v: want the gated model fetched and no Authorization sent to the CDN", hs)
	}
}

// serveOn serves h on addr (a loopback address other than 127.0.0.1, to
// tell hosts apart), falling back to 127.0.0.1 where addr cannot be bound.
func serveOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if l, err := net.Listen("tcp", addr+":0"); err == nil {
		srv.Listener.Close()
		srv.Listener = l
	} else {
		t.Logf("cannot listen on %s (%v): sharing 127.0.0.1", addr, err)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestDamagedVolume: a generation whose marker is gone is not in sync and
// is rebuilt by the next sync; a store file changed behind volboot's back is
// found by status --verify (and only by it: the in-sync boot never hashes)
// and put right by repair.
func TestDamagedVolume(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("dmg", 4, 12)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	gen := filepath.Join(f.vol, ".volboot", "envs", id)

	if err := os.Remove(filepath.Join(gen, venv.CompleteName)); err != nil {
		t.Fatal(err)
	}
	st, r := f.status()
	if st.InSync || len(st.Drift) == 0 || st.Drift[0].Kind != "partial-generation" {
		t.Fatalf("status of a generation without its marker:\n%s", r.stdout)
	}
	if got := f.sync(); got != id {
		t.Fatalf("rebuilt generation %s, want %s", got, id)
	}
	if _, err := venv.ReadMarker(gen); err != nil {
		t.Fatalf("after sync: %v", err)
	}

	// Change a file in the store (it is hard-linked into the generation).
	victim := filepath.Join(gen, "lib", "python3.11", "site-packages", ws[1].Spec.Module(), "__init__.py")
	if _, err := os.Stat(victim); err != nil {
		matches, _ := filepath.Glob(filepath.Join(gen, "lib", "python*", "site-packages", ws[1].Spec.Module(), "__init__.py"))
		if len(matches) == 0 {
			t.Fatalf("no %s in the generation", ws[1].Spec.Module())
		}
		victim = matches[0]
	}
	if err := os.WriteFile(victim, []byte("raise SystemExit('tampered')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, r := f.status(); !st.InSync {
		t.Errorf("plain status hashed files (or found drift elsewhere):\n%s", r.stdout)
	}
	st, r = f.status("--verify")
	if st.InSync || len(st.Drift) == 0 || st.Drift[0].Kind != "corrupt-file" || st.Drift[0].Package != ws[1].Spec.Name {
		t.Fatalf("status --verify after tampering with %s:\n%s", ws[1].Spec.Name, r.stdout)
	}
	if r := f.run("repair"); r.code != 0 {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st, r = f.status("--verify")
	if !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
		t.Fatalf("status --verify after repair:\n%s%s", r.stdout, r.stderr)
	}
	out, err := exec.Command(filepath.Join(gen, "bin", "python"), "-c", "import "+ws[1].Spec.Module()).CombinedOutput()
	if err != nil {
		t.Errorf("import after repair: %v\n%s", err, out)
	}
}

// TestGenerationsSideBySide: workers on different GPUs share a volume with
// one generation each (DESIGN.md §2): each is in sync with its own, boots
// it on the fast path, and venv points at the newest.
func TestGenerationsSideBySide(t *testing.T) {
	f := newFixture(t, "")
	core := f.add(synthstack.Small("side", 3, 6)...)
	fa := f.add(synthstack.Spec{Name: "fast-attn", Version: "2.8.3", PyFiles: 2})[0]
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(core...)},
		{Name: "attn", Requirements: requirements(fa), When: map[string]string{"compute-capability": ">=8.0"}},
	}, append(f.entries("core", core...), f.entry(fa, "attn")))
	probe := func(name, cc string) []string {
		p := filepath.Join(f.work, name+".json")
		doc := fmt.Sprintf(`{"driver": "570.86.15", "cuda": "12.8", "gpus": [{"name": %q, "compute_capability": %q, "memory_mib": 16384}]}`, name, cc)
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"VOLBOOT_GPU_PROBE=" + p}
	}
	t4, a100 := probe("T4", "7.5"), probe("A100", "8.0")

	f.env = t4
	idT4 := f.sync()
	f.env = a100
	idA100 := f.sync()
	if idT4 == idA100 {
		t.Fatalf("a T4 and an A100 share generation %s although attn applies only to one", idT4)
	}
	for _, w := range []struct {
		env      []string
		id, attn string
	}{{t4, idT4, "skipped"}, {a100, idA100, "installed"}} {
		f.env = w.env
		st, r := f.status()
		if !st.InSync || *st.Generation != w.id {
			t.Errorf("status with %s: want in sync at %s\n%s", w.env, w.id, r.stdout)
		}
		if state, _ := st.group("attn"); state != w.attn {
			t.Errorf("status with %s: attn %s, want %s", w.env, state, w.attn)
		}
		before := f.pythonStarts()
		if got := f.sync(); got != w.id {
			t.Errorf("sync with %s: generation %s, want %s", w.env, got, w.id)
		}
		if n := f.pythonStarts(); n != before {
			t.Errorf("sync with %s was not the fast path (%d interpreter starts)", w.env, n-before)
		}
	}
	link, _ := os.Readlink(filepath.Join(f.vol, "venv"))
	if filepath.Base(link) != idA100 {
		t.Errorf("venv -> %s, want the newest generation %s", link, idA100)
	}
	envs := filepath.Join(f.vol, ".volboot", "envs")
	if out, err := exec.Command(filepath.Join(envs, idA100, "bin", "python"), "-c", "import fast_attn").CombinedOutput(); err != nil {
		t.Errorf("the A100 generation cannot import fast_attn: %v\n%s", err, out)
	}
	if err := exec.Command(filepath.Join(envs, idT4, "bin", "python"), "-c", "import fast_attn").Run(); err == nil {
		t.Error("the T4 generation holds fast_attn, which its worker skipped")
	}
}

// TestFlakyIndexConverges: dropped connections, 503s, a 429 with
// Retry-After, corrupted bytes and a proxy that ignores ranges, each for the
// first requests of a wheel, still end in one sync that exits 0 with every
// file verified.
func TestFlakyIndexConverges(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("flaky", 6, 9)...)
	for i, w := range ws {
		// Each wheel is a few kilobytes: break it early.
		fault := []testindex.Fault{
			{Drop: true, DropAfter: 700, Times: 2},
			{Status: 503, Times: 2},
			{Status: 429, RetryAfter: "1", Times: 1},
			{Corrupt: true, CorruptAt: 100, Times: 1},
			{Drop: true, DropAfter: 900, Times: 1},
			{},
		}[i]
		if err := f.index.SetFault(testindex.FileURLPath(w.Filename), fault); err != nil {
			t.Fatal(err)
		}
	}
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	for _, w := range ws {
		if s := f.stats(w); s.Requests < 1 {
			t.Errorf("%s: never requested", w.Filename)
		}
	}
	for i, min := range map[int]int64{0: 3, 1: 3, 2: 2, 3: 2, 4: 2} {
		if s := f.stats(ws[i]); s.Requests < min {
			t.Errorf("%s: %d requests, want >= %d: a fault went unnoticed", ws[i].Filename, s.Requests, min)
		}
	}
	st, r := f.status("--verify")
	if !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
		t.Fatalf("status --verify after a flaky index:\n%s%s", r.stdout, r.stderr)
	}
}

// TestLeaseKeepsGenerationThroughGC: a handler started by `volboot run`
// keeps running from its generation while a new lock builds another and
// flips venv, and gc spares the old generation while the handler's lease
// lives, then removes it once the handler is gone (DESIGN.md rule 3).
//
// In the local layout the handler runs from its local tree, whose big
// files are links to the old generation's store files: the lease keeps
// them too.
func TestLeaseKeepsGenerationThroughGC(t *testing.T) {
	for _, layout := range []string{"volume", "local"} {
		t.Run(layout, func(t *testing.T) { leaseKeepsGenerationThroughGC(t, layout) })
	}
}

func leaseKeepsGenerationThroughGC(t *testing.T, layout string) {
	f := newFixture(t, "")
	specs := synthstack.Small("lease", 3, 6)
	specs[1].Blobs, specs[1].BlobSize = 1, 300<<10
	ws := f.add(specs...)
	write := func(ws []synthstack.Wheel) {
		f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	}
	write(ws)
	old := f.sync()

	ctl := t.TempDir()
	ready, stop, result := filepath.Join(ctl, "ready"), filepath.Join(ctl, "stop"), filepath.Join(ctl, "result")
	handler := fmt.Sprintf(`import glob, os, sys, time
open(%[1]q, "w").write(sys.prefix)
while not os.path.exists(%[2]q):
    time.sleep(0.02)
import lease_01.sub000.m00001 as late
import lease_01
blob = glob.glob(os.path.join(os.path.dirname(lease_01.__file__), "lib", "*.so"))[0]
assert len(open(blob, "rb").read()) == 300 << 10
open(%[3]q, "w").write(late.__file__)
`, ready, stop, result)
	run := f.command("run", "--layout", layout, "--", "python", "-c", handler)
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	defer func() {
		if run.ProcessState == nil {
			run.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("volboot run ended before the handler was up: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler did not start within a minute:\n%s", out.String())
		}
	}

	// A new lock: one package changes version.
	v2 := f.add(synthstack.Spec{Name: "lease-02", Version: "2.0", PyFiles: 2})[0]
	write(append(ws[:2:2], v2))
	cur := f.sync()
	if cur == old {
		t.Fatal("the new lock built no new generation")
	}
	envs := filepath.Join(f.vol, ".volboot", "envs")
	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("gc with a live lease: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := venv.ReadMarker(filepath.Join(envs, old)); err != nil {
		t.Fatalf("gc removed generation %s while a running handler's lease names it: %v", old, err)
	}

	// The handler, still on the old generation, imports a module it had
	// not touched yet.
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("volboot run: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the handler did not stop:\n%s", out.String())
	}
	late, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("the handler's late import failed:\n%s", out.String())
	}
	from := filepath.Join(envs, old)
	if layout == "local" {
		from = filepath.Join(f.local, "envs", old)
	}
	if !strings.HasPrefix(string(late), from+"/") {
		t.Errorf("the late import came from %s, not from generation %s at %s", late, old, from)
	}

	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("gc after the handler stopped: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(envs, old)); err == nil {
		t.Errorf("gc kept generation %s after its lease ended", old)
	}
	if packs, _ := filepath.Glob(filepath.Join(f.vol, ".volboot", "packs", old+"-*")); len(packs) != 0 {
		t.Errorf("gc kept the pack of generation %s after its lease ended: %v", old, packs)
	}
	st, r := f.status("--verify")
	if !st.InSync || len(st.Drift) != 0 || *st.Generation != cur {
		t.Fatalf("status --verify after gc:\n%s%s", r.stdout, r.stderr)
	}
}

// TestSpeculativeBuild: a first sync builds its generation while the
// wheels unpack, linking each as its entry completes, and uses that build.
// Then it changes one wheel of the synced volume: the next sync links the
// packages the store holds while it fetches and unpacks the new one, and
// uses that build. When the new wheel of an optional group cannot
// be fetched, the speculation (which assumed it would arrive) is abandoned
// and the generation is built without that group.
func TestSpeculativeBuild(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("spec", 4, 12)...)
	write := func(core, extra []synthstack.Wheel) {
		f.write([]synthstack.Group{
			{Name: "core", Required: true, Requirements: requirements(core...)},
			{Name: "extra", Required: false, Requirements: requirements(extra...)},
		}, append(f.entries("core", core...), f.entries("extra", extra...)...))
	}
	write(ws[:3], ws[3:])
	r := f.run("sync", "-v")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	first := generationOf(t, r.stdout)
	if !strings.Contains(r.stderr, "speculative build used") || !strings.Contains(r.stderr, first) {
		t.Fatalf("the first sync did not build %s while its wheels unpacked:\n%s", first, r.stderr)
	}

	v2 := f.add(synthstack.Spec{Name: "spec-01", Version: "2.0", PyFiles: 4, DataFiles: 4, DataSize: 300})[0]
	write([]synthstack.Wheel{ws[0], v2, ws[2]}, ws[3:])
	r = f.run("sync", "-v")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	second := generationOf(t, r.stdout)
	if second == first || !strings.Contains(r.stderr, "speculative build used") || !strings.Contains(r.stderr, second) {
		t.Fatalf("the sync after one wheel changed did not use its speculative build of %s (first %s):\n%s", second, first, r.stderr)
	}
	st, sr := f.status("--verify")
	if !st.InSync || !st.Verified || len(st.Drift) != 0 {
		t.Fatalf("after the speculative build: %s%s", sr.stdout, sr.stderr)
	}
	py := filepath.Join(f.vol, ".volboot", "envs", second, "bin", "python")
	if out, err := exec.Command(py, "-c", "import "+v2.Spec.Module()+", "+ws[3].Spec.Module()).CombinedOutput(); err != nil {
		t.Fatalf("import in the speculative generation: %v\n%s", err, out)
	}

	// Now the optional group's wheel changes too, and its download fails.
	v3 := f.add(synthstack.Spec{Name: "spec-03", Version: "2.0", PyFiles: 3})[0]
	if err := f.index.SetFault(testindex.FileURLPath(v3.Filename), testindex.Fault{Status: 404}); err != nil {
		t.Fatal(err)
	}
	v4 := f.add(synthstack.Spec{Name: "spec-02", Version: "2.0", PyFiles: 3})[0]
	write([]synthstack.Wheel{ws[0], v2, v4}, []synthstack.Wheel{v3})
	r = f.run("sync", "-v")
	if r.code != 0 {
		t.Fatalf("sync with a failing optional wheel: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	third := generationOf(t, r.stdout)
	if !strings.Contains(r.stderr, "speculative build not used") || !strings.Contains(r.stderr, `"abandoned":true`) || strings.Contains(r.stderr, "speculative build used") {
		t.Fatalf("the speculation that assumed the failed wheel was not abandoned:\n%s", r.stderr)
	}
	st, sr = f.status("--verify")
	if state, _ := st.group("extra"); state != "degraded" || st.Generation == nil || *st.Generation != third {
		t.Fatalf("after the abandoned speculation: extra %q, generation %v, want degraded at %s\n%s", state, st.Generation, third, sr.stdout)
	}
	if !st.Verified {
		t.Fatalf("status --verify after the abandoned speculation:\n%s%s", sr.stdout, sr.stderr)
	}
	py = filepath.Join(f.vol, ".volboot", "envs", third, "bin", "python")
	if out, err := exec.Command(py, "-c", "import "+v4.Spec.Module()).CombinedOutput(); err != nil {
		t.Fatalf("import in the rebuilt generation: %v\n%s", err, out)
	}
	// The abandoned speculation left no directory beside the generations.
	ents, _ := os.ReadDir(filepath.Join(f.vol, ".volboot", "envs"))
	for _, e := range ents {
		if _, temp := atomicfile.ParseTempName(e.Name()); temp {
			t.Errorf("left in envs/: %s", e.Name())
		}
	}
}

// TestUnpackOverlapsDownloads: a wheel is unpacked into the store as soon
// as its download lands, while a slower download is still under way, so a
// first boot costs about its downloads rather than downloads plus unpacks.
func TestUnpackOverlapsDownloads(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("overlap", 3, 6)...)
	slow, fast := ws[0], ws[1:]
	const stall = 4 * time.Second
	if err := f.index.SetFault(testindex.FileURLPath(slow.Filename), testindex.Fault{Stall: stall, StallAfter: 100}); err != nil {
		t.Fatal(err)
	}
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))

	// Watch the volume while the sync runs: the first fast wheel's store
	// entry must be complete before the slow wheel is in the cache.
	type seen struct {
		entry     bool // a fast wheel's entry completed
		slowThere bool // the slow wheel's download was in place by then
	}
	stop := make(chan struct{})
	watched := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { watched <- s }()
		for {
			for _, w := range fast {
				if _, err := os.Stat(filepath.Join(f.vol, ".volboot", "store", w.SHA256, wheel.CompleteName)); err == nil {
					_, err := os.Stat(filepath.Join(f.vol, "cache", "wheels", slow.SHA256+".whl"))
					s = seen{entry: true, slowThere: err == nil}
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	id := f.sync()
	took := time.Since(start)
	close(stop)
	s := <-watched
	if !s.entry || s.slowThere {
		t.Fatalf("no fast wheel was unpacked while the slow one still downloaded (%+v)", s)
	}
	if took < stall {
		t.Fatalf("the sync took %v, less than the slow download's stall of %v: the fault did not apply", took, stall)
	}
	st, sr := f.status("--verify")
	if !st.InSync || *st.Generation != id || len(st.Drift) != 0 {
		t.Fatalf("status --verify:\n%s%s", sr.stdout, sr.stderr)
	}
}

// dueState makes group's retry of generation id due now, in state.json.
func dueState(t *testing.T, path, id, group string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	gen, _ := st["generations"].(map[string]any)[id].(map[string]any)
	if gen == nil {
		t.Fatalf("state.json has no generation %s:\n%s", id, data)
	}
	found := false
	for _, g := range gen["groups"].([]any) {
		if g := g.(map[string]any); g["name"] == group {
			g["retry_after"] = "2000-01-01T00:00:00Z"
			found = true
		}
	}
	if !found {
		t.Fatalf("state.json: generation %s has no group %s", id, group)
	}
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
