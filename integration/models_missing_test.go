package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/fakehub"
	"github.com/volboot/volboot/integration/testindex"
)

// TestModelsMissing: a model the hub cannot give (here: not there yet)
// degrades its group, but never takes the group's packages out of the
// generation (DESIGN.md §11). A required group missing a model fails
// `volboot sync` after the generation is built and recorded, and `volboot
// run` starts the handler all the same, without HF_HUB_OFFLINE, naming the
// cause in VOLBOOT_DEGRADED; every sync tries the model again, and once it
// arrives the generation is the same one.
func TestModelsMissing(t *testing.T) {
	f := newFixture(t, "")
	core := f.add(synthstack.Small("mm-core", 2, 4)...)
	extra := f.add(synthstack.Small("mm-extra", 1, 4)...)
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(core...)},
		{Name: "extra", Requirements: requirements(extra...)},
	}, append(f.entries("core", core...), f.entries("extra", extra...)...))
	hub := fakehub.New(fakehub.Options{})
	cdn := serveOn(t, "127.0.0.2", hub.CDN())
	hub.SetCDNURL(cdn.URL)
	hubSrv := serveOn(t, "127.0.0.3", hub)
	m, err := os.OpenFile(f.manifest(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	repos := map[string]string{"volboot/core-voice": "core", "volboot/extra-asr": "extra"}
	for repo, group := range repos {
		fmt.Fprintf(m, "\n[[model]]\nrepo = %q\nrevision = \"main\"\nfiles = [\"w.bin\"]\ngroup = %q\n", repo, group)
	}
	m.Close()
	f.env = append(f.env, "HF_ENDPOINT="+hubSrv.URL)

	r := f.run("sync")
	if r.code != 1 {
		t.Fatalf("sync with the models missing: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := generationOf(t, r.stdout)
	if msg := strings.Join(failures(r.stderr), "\n"); !strings.Contains(msg, "required group core is missing models: model volboot/core-voice") ||
		!strings.Contains(msg, "its packages are installed in generation "+id) {
		t.Errorf("sync's error does not say which model the required group misses and that its packages are installed:\n%s", msg)
	}
	// Both groups' packages are in the generation, and the volume's venv
	// points at it.
	for _, w := range append(core, extra...) {
		f.importIn(id, "import "+w.Spec.Module())
	}
	if link, err := os.Readlink(filepath.Join(f.vol, "venv")); err != nil || filepath.Base(link) != id {
		t.Errorf("venv -> %q (%v), want generation %s", link, err, id)
	}
	st, _ := f.status()
	for _, g := range []string{"core", "extra"} {
		if state, reason := st.group(g); state != "degraded" || !strings.Contains(reason, "model volboot/") {
			t.Errorf("group %s: %s %q, want degraded by its model", g, state, reason)
		}
	}
	// The required group's model is drift (every sync tries it again);
	// the optional group's, waiting for its retry, is a note: drift is
	// what the next sync would change.
	var missing []string
	for _, d := range st.Drift {
		if d.Kind == "model-missing" {
			missing = append(missing, d.Package)
		}
	}
	if st.InSync || strings.Join(missing, ",") != "volboot/core-voice" {
		t.Errorf("status with the models missing: in_sync %t, drift %+v; want model-missing for volboot/core-voice alone", st.InSync, st.Drift)
	}
	noted := false
	for _, n := range st.Notes {
		noted = noted || n.Kind == "group-degraded" && strings.Contains(n.Detail, "volboot/extra-asr")
	}
	if !noted {
		t.Errorf("status notes %+v: want the optional group degraded by volboot/extra-asr, waiting for its retry", st.Notes)
	}

	// run starts the handler: packages importable, the cause named, no
	// HF_HUB_OFFLINE (the handler may fetch the models itself).
	out := filepath.Join(t.TempDir(), "handler.out")
	handler := fmt.Sprintf(`import os, %s, %s
open(%q, "w").write("groups=%%s|offline=%%s|degraded=%%s" %% (os.environ.get("VOLBOOT_GROUPS"), os.environ.get("HF_HUB_OFFLINE"), os.environ.get("VOLBOOT_DEGRADED")))`,
		core[0].Spec.Module(), extra[0].Spec.Module(), out)
	r = f.run("run", "--", "python", "-c", handler)
	if r.code != 0 {
		t.Fatalf("run with the models missing: exit %d, want the handler's 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "starting the handler all the same") {
		t.Errorf("run did not say it starts the handler without the required group's models:\n%s", r.stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the handler did not run: %v", err)
	}
	if s := string(got); !strings.HasPrefix(s, "groups=|offline=None|") || !strings.Contains(s, "core=model volboot/core-voice") {
		t.Errorf("handler saw %s; want no usable group, HF_HUB_OFFLINE unset and core's model named in VOLBOOT_DEGRADED", s)
	}

	// The models arrive: the next sync fetches them into the same
	// generation (the optional group's retry is forced by repair).
	for repo := range repos {
		if _, err := hub.Commit("model", repo, map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(bytes.Repeat([]byte(repo), 100)), LFS: true}}, "main"); err != nil {
			t.Fatal(err)
		}
	}
	r = f.run("repair")
	if r.code != 0 {
		t.Fatalf("repair once the models are there: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if again := generationOf(t, r.stdout); again != id {
		t.Errorf("the generation changed from %s to %s although only the models arrived", id, again)
	}
	st, _ = f.status()
	if !st.InSync {
		t.Errorf("status once the models are there: drift %+v", st.Drift)
	}
}

// TestModelsFetchedBesideThePackages: a sync fetches the models while the
// wheels download and unpack, not after (on a network volume the unpack
// takes minutes and the models the network's time): the hub hears its
// first request while a stalled wheel is not yet in the store. A model of
// a group whose package then fails is not recorded, and the group's
// reason is the package's.
func TestModelsFetchedBesideThePackages(t *testing.T) {
	f := newFixture(t, "")
	core := f.add(synthstack.Small("mb-core", 2, 4)...)
	extra := f.add(synthstack.Small("mb-extra", 1, 4)...)
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(core...)},
		{Name: "extra", Requirements: requirements(extra...)},
	}, append(f.entries("core", core...), f.entries("extra", extra...)...))
	stalled := core[0]
	if err := f.index.SetFault(testindex.FileURLPath(stalled.Filename), testindex.Fault{Stall: 4 * time.Second, StallAfter: 512}); err != nil {
		t.Fatal(err)
	}
	if err := f.index.SetFault(testindex.FileURLPath(extra[0].Filename), testindex.Fault{Status: 404}); err != nil {
		t.Fatal(err)
	}
	hub := fakehub.New(fakehub.Options{})
	for repo, data := range map[string]string{"volboot/core-voice": "voice", "volboot/extra-asr": "asr"} {
		if _, err := hub.Commit("model", repo, map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(bytes.Repeat([]byte(data), 500)), LFS: true}}, "main"); err != nil {
			t.Fatal(err)
		}
	}
	cdn := serveOn(t, "127.0.0.2", hub.CDN())
	hub.SetCDNURL(cdn.URL)
	var once sync.Once
	storedAtFirstAsk := make(chan bool, 1)
	hubSrv := serveOn(t, "127.0.0.3", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			_, err := os.Stat(filepath.Join(f.vol, ".volboot", "store", stalled.SHA256, wheel.CompleteName))
			storedAtFirstAsk <- err == nil
		})
		hub.ServeHTTP(w, r)
	}))
	m, err := os.OpenFile(f.manifest(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for repo, group := range map[string]string{"volboot/core-voice": "core", "volboot/extra-asr": "extra"} {
		fmt.Fprintf(m, "\n[[model]]\nrepo = %q\nrevision = \"main\"\nfiles = [\"w.bin\"]\ngroup = %q\n", repo, group)
	}
	m.Close()
	f.env = append(f.env, "HF_ENDPOINT="+hubSrv.URL)

	r := f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	select {
	case stored := <-storedAtFirstAsk:
		if stored {
			t.Errorf("the hub was first asked after the stalled wheel %s was in the store: the models waited for the packages", stalled.Filename)
		}
	default:
		t.Fatal("the hub was never asked for the models")
	}
	st, _ := f.status()
	if state, reason := st.group("core"); state != "installed" {
		t.Errorf("group core: %s %q, want installed", state, reason)
	}
	if state, reason := st.group("extra"); state != "degraded" || strings.Contains(reason, "model") || !strings.Contains(reason, extra[0].Spec.Name) {
		t.Errorf("group extra: %s %q, want degraded by its package %s, not its model", state, reason, extra[0].Spec.Name)
	}
	data, err := os.ReadFile(filepath.Join(f.vol, ".volboot", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("volboot/extra-asr")) || !bytes.Contains(data, []byte("volboot/core-voice")) {
		t.Errorf("state records the models %s; want core's alone (extra's group lost its packages)", data)
	}
}
