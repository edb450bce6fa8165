package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// smokeLine is the smoke check's summary line of one round (DESIGN.md
// §5.5): the imports taken over from an earlier generation and those run.
type smokeLine struct {
	Msg     string   `json:"msg"`
	Reused  []string `json:"reused"`
	Run     []string `json:"run"`
	Changed []string `json:"changed"`
}

// smokeRounds finds the smoke check's summary lines in a sync's log.
func smokeRounds(t *testing.T, stderr string) []smokeLine {
	t.Helper()
	var out []smokeLine
	for _, line := range strings.Split(stderr, "\n") {
		var l smokeLine
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "smoke check: ") && strings.Contains(l.Msg, "checking") {
			for _, list := range []*[]string{&l.Reused, &l.Run} {
				if len(*list) == 0 {
					*list = nil
				}
				sort.Strings(*list)
			}
			out = append(out, l)
		}
	}
	return out
}

// TestSmokeRecordsReused: a generation takes over an earlier generation's
// smoke passes whose dependencies it did not change, and runs again the
// imports whose dependencies changed: a package the import loaded, a
// name it tried and missed that a new package now provides. A failed
// import is never taken over, nor one that starts a process. Real python3
// imports, real records.
func TestSmokeRecordsReused(t *testing.T) {
	f := newFixture(t, "")
	// app imports dep and tries the optional extra; scan lists entry
	// points (as torch does at import): every distribution's name and
	// entry_points.txt.
	appInit := "import dep\ntry:\n    import extra\nexcept ImportError:\n    extra = None\n"
	scanInit := "import importlib.metadata as md\nEPS = md.entry_points(group='volboot.test')\n"
	// spawner starts a process at import, whose reads are not recorded:
	// its pass is never taken over.
	spawnInit := "import subprocess\nsubprocess.run(['true'], check=True)\n"
	spec := func(name, version, init string) synthstack.Spec {
		return synthstack.Spec{Name: name, Version: version, PyFiles: 3, Init: init, ConsoleScript: true}
	}
	ws := f.add(
		spec("app", "1.0", appInit), spec("scan", "1.0", scanInit), spec("dep", "1.0", ""), spec("other", "1.0", ""),
		spec("other", "1.1", ""), spec("dep", "1.1", ""), spec("extra", "1.0", ""), spec("spawner", "1.0", spawnInit),
	)
	app, scan, dep1, other1, other2, dep2, extra, spawner := ws[0], ws[1], ws[2], ws[3], ws[4], ws[5], ws[6], ws[7]
	broken := f.add(synthstack.Spec{Name: "broken", Version: "1.0", PyFiles: 2, ImportError: true})[0]

	lock := func(core ...synthstack.Wheel) {
		core = append([]synthstack.Wheel{app, scan, spawner}, core...)
		f.write([]synthstack.Group{
			{Name: "core", Required: true, Requirements: requirements(core...)},
			{Name: "opt", Requirements: requirements(broken)},
		}, append(f.entries("core", core...), f.entry(broken, "opt")))
	}
	sync := func(what string) []smokeLine {
		t.Helper()
		r := f.run("sync")
		if r.code != 0 {
			t.Fatalf("%s: sync exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
		}
		rounds := smokeRounds(t, r.stderr)
		if len(rounds) == 0 {
			t.Fatalf("%s: no smoke check summary in the log:\n%s", what, r.stderr)
		}
		return rounds
	}
	want := func(what string, got smokeLine, reused, run []string) {
		t.Helper()
		if !reflect.DeepEqual(got.Reused, reused) || !reflect.DeepEqual(got.Run, run) {
			t.Errorf("%s: reused %q and ran %q, want reused %q and ran %q (changed: %q)", what, got.Reused, got.Run, reused, run, got.Changed)
		}
	}

	// A: broken fails and degrades its group; the generation built again
	// without it takes app, dep and other over from the first round, and
	// scan runs again: the distributions it listed are not the same. Every
	// later sync tries broken again (its lock changed), which fails again.
	lock(dep1, other1)
	rounds := sync("A")
	if len(rounds) != 2 {
		t.Fatalf("A: %d smoke rounds, want 2 (broken degrades opt): %+v", len(rounds), rounds)
	}
	want("A, first round", rounds[0], nil, []string{"app", "broken", "dep", "other", "scan", "spawner"})
	want("A, without broken", rounds[1], []string{"app", "dep", "other"}, []string{"scan", "spawner"})

	// B: other changed, which nothing imports; scan reads its
	// entry_points.txt, the same bytes in both versions.
	lock(dep1, other2)
	want("B (other changed)", sync("B")[0], []string{"app", "dep", "scan"}, []string{"broken", "other", "spawner"})

	// C: dep changed, which app imports.
	lock(dep2, other2)
	want("C (dep changed)", sync("C")[0], []string{"other", "scan"}, []string{"app", "broken", "dep", "spawner"})

	// D: extra added, which app tried to import and missed, and scan
	// finds among all distributions.
	lock(dep2, other2, extra)
	d := sync("D")[0]
	want("D (extra added)", d, []string{"dep", "other"}, []string{"app", "broken", "extra", "scan", "spawner"})
	if !strings.Contains(strings.Join(d.Changed, "\n"), "app: l extra changed") {
		t.Errorf("D: app ran again, but not for the name it missed: %q", d.Changed)
	}

	// Back to A's packages: its first generation holds passes of its own
	// for all but broken, which failed there; repair retries the degraded
	// group, and broken runs (and fails) again.
	lock(dep1, other1)
	r := f.run("repair")
	if r.code != 0 {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rounds = smokeRounds(t, r.stderr)
	if len(rounds) == 0 || !reflect.DeepEqual(rounds[0].Run, []string{"broken"}) {
		t.Errorf("repair: smoke rounds %+v, want the first to run broken alone", rounds)
	}

	// Each generation's records say what the import depended on.
	st, _ := f.status()
	if st.Generation == nil {
		t.Fatal("no generation")
	}
	current := *st.Generation
	for module, lines := range map[string][]string{
		"app":  {"volboot-smoke 1\n", "\nl\tdep\t", "\nl\textra\t", "/dep/__pycache__/__init__.cpython-"},
		"scan": {"\na\tall\t", "/site-packages/{dist:other}/entry_points.txt\tsha256="},
	} {
		data, err := os.ReadFile(filepath.Join(f.vol, ".volboot", "smoke", current, module))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range lines {
			if !strings.Contains(string(data), w) {
				t.Errorf("%s's record lacks %q:\n%s", module, w, data)
			}
		}
	}

	// gc keeps the records of the generations it keeps and trashes the
	// rest; the kept records still serve the next generation.
	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("gc: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ents, err := os.ReadDir(filepath.Join(f.vol, ".volboot", "smoke"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range ents {
		kept = append(kept, e.Name())
		if _, err := os.Stat(filepath.Join(f.vol, ".volboot", "envs", e.Name())); err != nil {
			t.Errorf("gc left the smoke records of generation %s, which it removed", e.Name())
		}
	}
	if len(kept) != 1 || kept[0] != current {
		t.Errorf("smoke records after gc: %q, want those of %s alone", kept, current)
	}
	// (The generation kept is A's without broken, where scan listed one
	// distribution fewer than in a first round with broken.)
	lock(dep1, other2)
	want("B again, after gc", sync("B again")[0], []string{"app", "dep"}, []string{"broken", "other", "scan", "spawner"})
}
