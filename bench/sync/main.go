// Command sync benchmarks the in-sync boot (issue 6, DESIGN.md rule 6): a
// `volboot sync` whose generation is already complete must cost the same
// whatever the stack's size, and far less than pip's own no-op.
//
// It generates a synthetic stack shaped like the F5-TTS closure (>= 150
// wheels, >= 40k files, >= 2 GB unpacked at -scale 1; see synthstack),
// serves it from a local index, syncs it once onto a volume and a 3-wheel
// stack onto another, then times, process start to exit, in-sync
// `volboot sync` on both (interleaved, median of -runs), and
// `pip install --no-deps --no-index <all wheels>` into a venv that already
// holds them (median of -pipruns). It prints the figures and two ratios:
//
//	F5 stack / 3 wheels   goal <= 1.2 (cost independent of size)
//	pip no-op / volboot   goal >= 50
//
// Usage: go run ./bench/sync [-scale 1] [-runs 30] [-pipruns 5] [-history N] [-rate 40M] [-dir DIR] [-keep]
//
// -rate R caps each download of the first syncs at R bytes per second (a
// slow network), times curl fetching the same files 4 at a time with the
// same cap, and prints the first sync's time over that: how much of the
// unpacking hides behind the downloads (1.0 would be all of it; volboot
// unpacks each wheel as its download lands).
//
// -history N first builds N earlier generations on the F5 volume (each lock
// drops one wheel), as a volume whose manifest changed N times holds: the
// in-sync boot must not pay for them either.
//
// Everything lives in a temporary directory under -dir (default the
// system's), removed afterwards unless -keep.
package main

import (
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/volboot/volboot/bench/benchbin"
	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/integration/testindex"
)

type options struct {
	volboot string
	python  string
	scale   float64
	runs    int
	pipRuns int
	dir     string
	keep    bool
	history int
	rate    int64
}

func main() {
	var o options
	flag.StringVar(&o.volboot, "volboot", "", "the volboot binary (default: build ./cmd/volboot)")
	flag.StringVar(&o.python, "python", "python3", "the interpreter")
	flag.Float64Var(&o.scale, "scale", 1, "stack size; 1 is >= 150 wheels, 40k files, 2 GB unpacked")
	flag.IntVar(&o.runs, "runs", 30, "timed in-sync syncs per volume")
	flag.IntVar(&o.pipRuns, "pipruns", 5, "timed pip no-op installs")
	flag.StringVar(&o.dir, "dir", "", "where to put the stack and volumes (default: the system's temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.IntVar(&o.history, "history", 0, "also build this many earlier generations on the F5 volume (each drops one wheel from the lock) before timing")
	rate := flag.String("rate", "", "cap each download of the first syncs at this many bytes per second (e.g. 50M), and time curl fetching the same files the same way")
	flag.Parse()
	if *rate != "" {
		n, err := fetch.ParseSize(*rate)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench/sync: -rate %q: want a positive size such as 50M\n", *rate)
			os.Exit(2)
		}
		o.rate = n
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench/sync: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("bench/sync: "+format+"\n", args...) }

func run(o options) error {
	tmp, err := benchbin.Workdir(o.dir, "volboot-bench-sync-")
	if err != nil {
		return err
	}
	if o.keep {
		say("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	bin, err := benchbin.Volboot(tmp, o.volboot)
	if err != nil {
		return err
	}

	// The stacks.
	wheels := filepath.Join(tmp, "wheels")
	if err := os.MkdirAll(wheels, 0o755); err != nil {
		return err
	}
	t0 := time.Now()
	big, err := synthstack.Write(wheels, synthstack.F5Shaped(o.scale), 2)
	if err != nil {
		return err
	}
	n, files, size, unpacked := synthstack.Stats(big)
	say("F5-shaped stack (scale %g): %d wheels, %d files, %.2f GB of wheels, %.2f GB unpacked; generated in %s",
		o.scale, n, files, gb(size), gb(unpacked), time.Since(t0).Round(time.Millisecond))
	small := big[len(big)-3:]

	index := testindex.New()
	defer index.Close()
	if err := index.AddWheelDir(wheels); err != nil {
		return err
	}
	srv := httptest.NewServer(index)
	defer srv.Close()

	bigVol, err := prepare(tmp, "f5", big, srv.URL)
	if err != nil {
		return err
	}
	smallVol, err := prepare(tmp, "three", small, srv.URL)
	if err != nil {
		return err
	}
	var downloads time.Duration
	if o.rate > 0 {
		if downloads, err = slowDownloads(index, srv.URL, big, o.rate, filepath.Join(tmp, "curl")); err != nil {
			return err
		}
		say("the F5 stack's downloads alone, capped at %s/s each: curl, %d at a time: %s", fetch.FormatSize(o.rate), fetchJobs, downloads.Round(time.Millisecond))
	}
	for _, v := range []*volume{bigVol, smallVol} {
		t0 := time.Now()
		out, err := v.sync(bin, o.python)
		if err != nil {
			return fmt.Errorf("first sync of %s: %v\n%s", v.name, err, out)
		}
		took := time.Since(t0)
		v.generation = generationOf(out)
		say("first sync of %s (%d wheels): %s, generation %s", v.name, len(v.wheels), took.Round(time.Millisecond), v.generation)
		if v == bigVol && o.rate > 0 {
			say("first sync / its downloads alone: %.2fx (1.0 would hide every unpack behind the downloads)", took.Seconds()/downloads.Seconds())
		}
	}
	for _, w := range big {
		index.SetFault(testindex.FileURLPath(w.Filename), testindex.Fault{})
	}

	// History: earlier locks of the same volume, each a generation that
	// state.json keeps describing. The last sync is the current lock again.
	if o.history > 0 {
		t0 := time.Now()
		for i := 0; i < o.history; i++ {
			old := slices.Delete(slices.Clone(big), topLevel+i, topLevel+i+1)
			if _, err := prepareAt(bigVol.dir, bigVol.manifest, old, srv.URL); err != nil {
				return err
			}
			if out, err := bigVol.sync(bin, o.python); err != nil {
				return fmt.Errorf("sync of an earlier lock: %v\n%s", err, out)
			}
		}
		if _, err := prepareAt(bigVol.dir, bigVol.manifest, big, srv.URL); err != nil {
			return err
		}
		if out, err := bigVol.sync(bin, o.python); err != nil || generationOf(out) != bigVol.generation {
			return fmt.Errorf("sync back to the current lock: %v\n%s", err, out)
		}
		fi, _ := os.Stat(filepath.Join(bigVol.dir, ".volboot", "state.json"))
		say("F5 volume now also holds %d earlier generations (built in %s); state.json is %d bytes", o.history, time.Since(t0).Round(time.Millisecond), fi.Size())
	}

	// In-sync boots, interleaved so that both see the same machine load.
	var bigTimes, smallTimes []time.Duration
	for i := 0; i < o.runs; i++ {
		for _, v := range []*volume{bigVol, smallVol} {
			t0 := time.Now()
			out, err := v.sync(bin, o.python)
			d := time.Since(t0)
			if err != nil {
				return fmt.Errorf("in-sync sync of %s: %v\n%s", v.name, err, out)
			}
			if g := generationOf(out); g != v.generation {
				return fmt.Errorf("in-sync sync of %s printed generation %q, the first sync %s", v.name, g, v.generation)
			}
			if strings.Contains(out, "acquired the volume lock") {
				return fmt.Errorf("in-sync sync of %s took the slow path:\n%s", v.name, out)
			}
			if v == bigVol {
				bigTimes = append(bigTimes, d)
			} else {
				smallTimes = append(smallTimes, d)
			}
		}
	}

	// volboot's figures first: pip's side needs a pip install of the stack
	// first, which on a network volume takes many minutes.
	bm, sm := median(bigTimes), median(smallTimes)
	say("in-sync volboot sync, F5-shaped stack (%d wheels): median %s of %d runs (min %s, max %s)", len(big), ms(bm), len(bigTimes), ms(slices.Min(bigTimes)), ms(slices.Max(bigTimes)))
	say("in-sync volboot sync, 3 wheels:                   median %s of %d runs (min %s, max %s)", ms(sm), len(smallTimes), ms(slices.Min(smallTimes)), ms(slices.Max(smallTimes)))
	say("ratio F5 stack / 3 wheels: %.2f (goal <= 1.2); of the fastest runs: %.2f (less sensitive to a shared machine's load)",
		float64(bm)/float64(sm), float64(slices.Min(bigTimes))/float64(slices.Min(smallTimes)))

	// pip's no-op: a venv that already holds every wheel.
	venvDir := filepath.Join(tmp, "pip-venv")
	if out, err := exec.Command(o.python, "-m", "venv", venvDir).CombinedOutput(); err != nil {
		return fmt.Errorf("python -m venv: %v\n%s", err, out)
	}
	pipArgs := []string{"-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "--quiet"}
	for _, w := range big {
		pipArgs = append(pipArgs, w.Path)
	}
	vpy := filepath.Join(venvDir, "bin", "python")
	t0 = time.Now()
	if out, err := exec.Command(vpy, pipArgs...).CombinedOutput(); err != nil {
		return fmt.Errorf("pip install: %v\n%s", err, out)
	}
	say("pip install --no-deps --no-index of the F5-shaped stack into a fresh venv: %s (for scale; not part of the ratios)", time.Since(t0).Round(time.Millisecond))
	var pipTimes []time.Duration
	for i := 0; i < o.pipRuns; i++ {
		t0 := time.Now()
		out, err := exec.Command(vpy, pipArgs...).CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("pip no-op install: %v\n%s", err, out)
		}
		pipTimes = append(pipTimes, d)
	}

	pm := median(pipTimes)
	say("pip install --no-deps --no-index, all %d wheels already installed: median %s of %d runs (min %s, max %s)", len(big), ms(pm), len(pipTimes), ms(slices.Min(pipTimes)), ms(slices.Max(pipTimes)))
	say("ratio pip no-op / volboot in-sync: %.0fx (goal >= 50x)", float64(pm)/float64(bm))
	return nil
}

// topLevel is how many of a stack's wheels the manifest names as
// requirements (f5-tts.toml names six in its tts group, one in each other).
const topLevel = 5

// volume is one volume with its manifest and lock.
type volume struct {
	name, dir, manifest string
	wheels              []synthstack.Wheel
	generation          string
}

// prepare writes the manifest and lock of ws (one required group) and
// makes an empty volume.
func prepare(tmp, name string, ws []synthstack.Wheel, base string) (*volume, error) {
	return prepareAt(filepath.Join(tmp, "vol-"+name), filepath.Join(tmp, name, "volboot.toml"), ws, base)
}

// prepareAt (re)writes the manifest and lock of a volume.
func prepareAt(dir, manifest string, ws []synthstack.Wheel, base string) (*volume, error) {
	name := filepath.Base(filepath.Dir(manifest))
	v := &volume{name: name, dir: dir, manifest: manifest, wheels: ws}
	for _, d := range []string{v.dir, filepath.Dir(v.manifest)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// As in the real F5 manifest, the group names a few top-level
	// requirements and the lock holds their whole closure in the group.
	var reqs []string
	var entries []synthstack.Entry
	for i, w := range ws {
		if i < topLevel {
			reqs = append(reqs, w.Spec.Name+"=="+w.Spec.Version)
		}
		entries = append(entries, w.Entry("core", base+testindex.FileURLPath(w.Filename)))
	}
	if err := os.WriteFile(v.manifest, synthstack.Manifest("bench-"+name, "pylock.toml", []synthstack.Group{{Name: "core", Required: true, Requirements: reqs}}), 0o644); err != nil {
		return nil, err
	}
	return v, os.WriteFile(filepath.Join(filepath.Dir(v.manifest), "pylock.toml"), synthstack.Lock(entries), 0o644)
}

// fetchJobs is how many files volboot downloads at once from one host by
// default (fetch.Options.PerHost).
const fetchJobs = 4

// slowDownloads caps every wheel's download at rate bytes per second and
// times curl fetching them all, fetchJobs at a time, into dir: what a
// first sync costs if its unpacks hide entirely behind its downloads.
// The cap stays for the syncs that follow.
func slowDownloads(index *testindex.Server, base string, ws []synthstack.Wheel, rate int64, dir string) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	args := []string{"--silent", "--fail", "--parallel", "--parallel-max", fmt.Sprint(fetchJobs)}
	for i, w := range ws {
		if err := index.SetFault(testindex.FileURLPath(w.Filename), testindex.Fault{Rate: rate}); err != nil {
			return 0, err
		}
		args = append(args, "-o", filepath.Join(dir, fmt.Sprint(i)), base+testindex.FileURLPath(w.Filename))
	}
	t0 := time.Now()
	if out, err := exec.Command("curl", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("curl: %v\n%s", err, out)
	}
	return time.Since(t0), os.RemoveAll(dir)
}

// sync runs `volboot sync` on the volume and returns its combined output.
func (v *volume) sync(bin, python string) (string, error) {
	cmd := exec.Command(bin, "sync", "--volume", v.dir, "--manifest", v.manifest, "--python", python)
	cmd.Env = append(os.Environ(), "VOLBOOT_LOG_FORMAT=json", "VOLBOOT_CREATE_VOLUME=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func generationOf(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(line, "generation "); ok {
			return strings.TrimSpace(id)
		}
	}
	return ""
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func gb(n int64) float64 { return float64(n) / 1e9 }
