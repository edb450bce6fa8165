package integration

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// TestKillLoop (issue 23) on local disk: see killLoopTest.
func TestKillLoop(t *testing.T) {
	killLoopTest(t, t.TempDir(), 0.01, 30, true)
}

// killLoopTest syncs the F5-shaped synthetic stack at scale once,
// undisturbed, on an empty volume under base, timing it (full); then, for
// kill intervals of 25% and 50% of full, on an empty volume each, starts
// syncs and SIGKILLs each (with everything it started, as a container
// dies) at that interval, until one finishes on its own. It requires:
//
//   - every killed try made measurable progress: more files in the store,
//     the generations and the smoke check's records, or more bytes
//     downloaded, than before it (once every file of the store and the
//     generation is there, one try may be killed in work no count shows:
//     the directory sync, the marker);
//   - no try spent more than 5 s setting aside what the last left;
//   - the loop converged within maxTries to the generation the undisturbed
//     sync built, with the same paths (and, with content, the same modes
//     and bytes; status --verify checks every file against RECORD anyway),
//     status --verify clean, and no staging directory left behind.
func killLoopTest(t *testing.T, base string, scale float64, maxTries int, content bool) {
	f := newFixture(t, filepath.Join(base, "undisturbed"))
	ws := f.add(synthstack.F5Shaped(scale)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	t0 := time.Now()
	r := f.run("sync", "-v")
	full := time.Since(t0)
	if r.code != 0 {
		t.Fatalf("undisturbed sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	want := generationOf(t, r.stdout)
	done := workOnVolume(t, f.vol)
	wantTree := genTree(t, filepath.Join(f.vol, ".volboot", "envs", want), content)
	if os.Getenv("VOLBOOT_TEST_DEBUG") != "" {
		t.Logf("undisturbed sync:\n%s", r.stderr)
	}
	t.Logf("undisturbed first sync of %d wheels, %d generation files: %s", len(ws), len(wantTree), full.Round(time.Millisecond))

	for _, pct := range []int{25, 50} {
		t.Run(fmt.Sprintf("%d%%", pct), func(t *testing.T) {
			g := f.on(filepath.Join(base, fmt.Sprintf("loop-%d", pct)))
			g.t = t
			if err := os.MkdirAll(g.vol, 0o755); err != nil {
				t.Fatal(err)
			}
			interval := full * time.Duration(pct) / 100
			var sum time.Duration
			var tries []string
			prev := workOnVolume(t, g.vol)
			tolerated := false
			for try := 1; ; try++ {
				if try > maxTries {
					t.Fatalf("no convergence after %d tries killed every %s (tries: %s)", maxTries, interval, strings.Join(tries, ", "))
				}
				t1 := time.Now()
				var more []string
				if os.Getenv("VOLBOOT_TEST_DEBUG") != "" {
					more = append(more, "-v")
				}
				killed, out := crashOut(t, g.command("sync", more...), interval, true)
				took := time.Since(t1)
				sum += took
				if d := leftoverTime(t, out); d > 5*time.Second {
					t.Errorf("try %d spent %s setting aside leftovers before new work", try, d)
				}
				if os.Getenv("VOLBOOT_TEST_DEBUG") != "" {
					t.Logf("try %d (killed %v):\n%s", try, killed, out)
				}
				if !killed {
					tries = append(tries, "finished in "+took.Round(time.Millisecond).String())
					break
				}
				now := workOnVolume(t, g.vol)
				tries = append(tries, now.String())
				switch {
				case now.more(prev):
				case prev.built >= done.built && !tolerated:
					// Every file was made already: what is left (the
					// directory sync, the marker, the smoke check's last
					// imports) shows in no file count. Once.
					tolerated = true
					t.Logf("try %d was killed with every file already made: %s", try, now)
				default:
					t.Errorf("try %d made no progress: %s before, %s after\n%s", try, prev, now, out)
				}
				prev = now
			}
			t.Logf("killed every %s: %d tries took %s in all, %.2f× the undisturbed sync; work on the volume after each: %s",
				interval.Round(time.Millisecond), len(tries), sum.Round(time.Millisecond), float64(sum)/float64(full), strings.Join(tries, ", "))
			tc := time.Now()
			if got := g.sync(); got != want {
				t.Fatalf("converged to %s, the undisturbed sync to %s", got, want)
			}
			st, r := g.status("--verify")
			logTook := func(what string) { t.Logf("%s: %s", what, time.Since(tc).Round(time.Millisecond)); tc = time.Now() }
			logTook("sync and status --verify")
			if !st.InSync || len(st.Drift) != 0 {
				t.Fatalf("status --verify after the kill loop:\n%s%s", r.stdout, r.stderr)
			}
			got := genTree(t, filepath.Join(g.vol, ".volboot", "envs", want), content)
			for p, s := range wantTree {
				if got[p] != s {
					t.Errorf("%s: %q, undisturbed %q", p, got[p], s)
				}
			}
			for p := range got {
				if _, ok := wantTree[p]; !ok {
					t.Errorf("%s: not in the undisturbed generation", p)
				}
			}
			logTook("tree comparison")
			for _, d := range []string{"store", "envs"} {
				ents, _ := os.ReadDir(filepath.Join(g.vol, ".volboot", d))
				for _, e := range ents {
					if _, tmp := atomicfile.ParseTempName(e.Name()); tmp {
						t.Errorf("left in %s after converging: %s", d, e.Name())
					}
				}
			}
		})
	}
}

// volumeWork is how much of a first sync a volume holds.
type volumeWork struct {
	files int   // regular files under the store, the generations and the smoke records
	built int   // of them, under the store and the generations
	bytes int64 // bytes in the download cache, partial downloads included
}

func (w volumeWork) String() string {
	return fmt.Sprintf("%d files/%d MB", w.files, w.bytes>>20)
}

func (w volumeWork) more(than volumeWork) bool {
	return w.files > than.files || w.bytes > than.bytes
}

// workOnVolume measures a volume's work. Directories are read many at a
// time: on MooseFS each read is a few round trips, and a walk one by one
// took longer than a try.
func workOnVolume(t *testing.T, vol string) volumeWork {
	t.Helper()
	var w volumeWork
	var files, built atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var walk func(dir string, count *atomic.Int64)
	walk = func(dir string, count *atomic.Int64) {
		defer wg.Done()
		sem <- struct{}{}
		ents, _ := os.ReadDir(dir)
		<-sem
		for _, e := range ents {
			switch {
			case e.IsDir():
				wg.Add(1)
				go walk(filepath.Join(dir, e.Name()), count)
			case e.Type().IsRegular():
				files.Add(1)
				if count != nil {
					count.Add(1)
				}
			}
		}
	}
	// Pack frames a killed packer kept count as files: a try killed while
	// packing makes progress there.
	for d, count := range map[string]*atomic.Int64{"store": &built, "envs": &built, "smoke": nil, "packs": nil} {
		wg.Add(1)
		go walk(filepath.Join(vol, ".volboot", d), count)
	}
	wg.Wait()
	w.files, w.built = int(files.Load()), int(built.Load())
	ents, _ := os.ReadDir(filepath.Join(vol, "cache", "wheels"))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			w.bytes += fi.Size()
		}
	}
	return w
}

// leftoverTime is how long a sync said it took to set aside what dead
// writers left (zero when there was nothing).
func leftoverTime(t *testing.T, stderr string) time.Duration {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		var rec struct {
			Msg  string          `json:"msg"`
			Took json.RawMessage `json:"took"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || !strings.HasPrefix(rec.Msg, "set aside ") {
			continue
		}
		var s string
		if json.Unmarshal(rec.Took, &s) == nil {
			if d, err := time.ParseDuration(s); err == nil {
				return d
			}
		}
		var secs float64
		if json.Unmarshal(rec.Took, &secs) == nil {
			return time.Duration(secs * float64(time.Second))
		}
		t.Fatalf("cannot read the duration in %s", line)
	}
	return 0
}

// genTree describes every path of a generation: its kind, and with
// content its mode and content digest or link target. Without content the
// directories are read many at a time (on MooseFS one by one took seconds).
func genTree(t *testing.T, root string, content bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	if !content {
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		var walk func(rel string)
		walk = func(rel string) {
			defer wg.Done()
			sem <- struct{}{}
			ents, err := os.ReadDir(filepath.Join(root, rel))
			<-sem
			if err != nil {
				t.Error(err)
				return
			}
			for _, e := range ents {
				r := filepath.Join(rel, e.Name())
				mu.Lock()
				out[r] = e.Type().String()
				mu.Unlock()
				if e.IsDir() {
					wg.Add(1)
					go walk(r)
				}
			}
		}
		wg.Add(1)
		walk(".")
		wg.Wait()
		return out
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			out[rel] = "link " + tgt
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("%v %x", fi.Mode(), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMooseFSKillLoop (issue 23) on the MooseFS rig, through the client
// 2 ms from its master: see killLoopTest. The stack is smaller than on
// local disk, so that the loop fits the suite's time on 2 cores.
func TestMooseFSKillLoop(t *testing.T) {
	rig := mooseRig(t)
	base := mooseVolume(t, rig.Clients()[0])[0]
	killLoopTest(t, base, 0.002, 30, false)
}
