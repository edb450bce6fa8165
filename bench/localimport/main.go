// Command localimport is benchmark P13 (issue 17, DESIGN.md §5.8): how
// long a handler's imports take from each place its environment can live,
// side by side in one run, on the real MooseFS rig (integration/mfsrig,
// one client -rtt from its master; -local for a local directory instead).
//
// It makes the F5-shaped synthetic stack (-scale), syncs it onto a fresh
// volume on the rig, and then, for -runs rounds, each variant in turn in a
// fresh interpreter with the client remounted first (its caches cold),
// imports every module of the stack's largest packages (synth-torch,
// -torchaudio, -triton, -transformers) from
//
//	(a) the volume layout: the generation on MooseFS
//	(b) the local layout: the tree `volboot run --layout local` lays out
//	    on local disk from the generation's pack (big files linked to the
//	    volume)
//	(c) a plain venv on the same mount, made by python -m venv and pip
//	    install --no-deps --no-index of the same wheels
//
// and prints the medians, with the goals:
//
//	import time (a) / (b)                                   goal >= 20
//	(b)'s extra boot: laying out its tree from the pack     goal <= 5 s at F5 size (scaled)
//	(b)'s local disk / the environment's size               goal <= 15%
//
// It also measures what a first install would save if the volume kept the
// small files only inside packs (no per-file tree of them in the store and
// the generation): the time to create the pack's files on MooseFS (the
// pack laid out onto the mount), against the first sync.
//
// Usage: go run ./bench/localimport [-scale 0.05] [-rtt 2ms] [-runs 3] [-local] [-dir DIR] [-keep]
//
// The rig needs root, ip(8) and Debian's moosefs-master, -chunkserver and
// -client packages.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/volboot/volboot/bench/benchbin"
	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/integration/mfsrig"
	"github.com/volboot/volboot/integration/testindex"
)

type options struct {
	volboot, python, dir string
	localDir             string
	scale                float64
	rtt                  time.Duration
	runs                 int
	local, keep, pip     bool
}

func main() {
	var o options
	flag.StringVar(&o.volboot, "volboot", "", "the volboot binary (default: build ./cmd/volboot)")
	flag.StringVar(&o.python, "python", "python3", "the interpreter")
	flag.Float64Var(&o.scale, "scale", 0.05, "stack size (synthstack.F5Shaped); 1 is >= 150 wheels, 40k files, 2 GB unpacked")
	flag.DurationVar(&o.rtt, "rtt", 2*time.Millisecond, "round trip between the MooseFS client and its master")
	flag.IntVar(&o.runs, "runs", 3, "rounds of the three imports")
	flag.BoolVar(&o.local, "local", false, "a local directory instead of the MooseFS rig")
	flag.StringVar(&o.dir, "dir", "", "where to put the stack, the rig and the local trees (default: the system's temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.BoolVar(&o.pip, "pip", true, "time (c), the pip venv (pip's install takes minutes on the rig)")
	flag.StringVar(&o.localDir, "local-dir", "", "the local layout's directory, on the disk a container would have (default: under -dir)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/localimport:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("bench/localimport: "+format+"\n", args...) }

func run(o options) error {
	tmp, err := benchbin.Workdir(o.dir, "volboot-bench-localimport-")
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
	wheels := filepath.Join(tmp, "wheels")
	if err := os.MkdirAll(wheels, 0o755); err != nil {
		return err
	}
	specs := synthstack.F5Shaped(o.scale)
	ws, err := synthstack.Write(wheels, specs, 2)
	if err != nil {
		return err
	}
	n, files, size, unpacked := synthstack.Stats(ws)
	_, f5files, _, _ := statsAtFullScale()
	say("F5-shaped stack (scale %g): %d wheels, %d files, %.2f GB of wheels, %.2f GB unpacked", o.scale, n, files, float64(size)/1e9, float64(unpacked)/1e9)
	index := testindex.New()
	defer index.Close()
	if err := index.AddWheelDir(wheels); err != nil {
		return err
	}
	srv := httptest.NewServer(index)
	defer srv.Close()
	manifest := filepath.Join(tmp, "work", "volboot.toml")
	if err := writeManifest(manifest, ws, srv.URL); err != nil {
		return err
	}

	base := filepath.Join(tmp, "volumes")
	remount := func() error { return nil }
	where := "local directory " + base
	if !o.local {
		if err := os.MkdirAll(filepath.Join(tmp, "rig"), 0o755); err != nil {
			return err
		}
		rig, err := mfsrig.Start(context.Background(), mfsrig.Options{Dir: filepath.Join(tmp, "rig"), Clients: 1, RTT: o.rtt})
		if err != nil {
			return fmt.Errorf("MooseFS rig (or pass -local): %w", err)
		}
		defer rig.Close()
		c := rig.Clients()[0]
		base = filepath.Join(c.Mount, "localimport")
		where = fmt.Sprintf("MooseFS through a client %s from its master", o.rtt)
		remount = func() error { return c.Remount(context.Background()) }
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	say("volume on %s", where)
	vol := filepath.Join(base, "vol")
	localDir := o.localDir
	if localDir == "" {
		localDir = filepath.Join(tmp, "local")
	} else {
		localDir = filepath.Join(localDir, filepath.Base(tmp))
		defer os.RemoveAll(localDir)
	}
	volboot := func(args ...string) (string, string, time.Duration, error) {
		cmd := exec.Command(bin, append(args[:1:1], append([]string{"--volume", vol, "--manifest", manifest, "--python", o.python, "--log-format", "json", "-v"}, args[1:]...)...)...)
		cmd.Env = append(os.Environ(), "VOLBOOT_CREATE_VOLUME=1")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		t0 := time.Now()
		err := cmd.Run()
		took := time.Since(t0)
		if err != nil {
			return out.String(), errb.String(), took, fmt.Errorf("volboot %s: %v\n%s", strings.Join(args, " "), err, tail(errb.String()))
		}
		return out.String(), errb.String(), took, nil
	}

	// The first sync: the generation, and its pack (made by a worker that
	// wants local trees; -local's volume is on a local filesystem, where
	// auto would not).
	out, logs, syncTook, err := volboot("sync", "--layout", "local")
	if err != nil {
		return err
	}
	gen := ""
	for _, l := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(l, "generation "); ok {
			gen = strings.TrimSpace(id)
		}
	}
	st, err := bootstrap.ReadState(filepath.Join(vol, ".volboot", "state.json"))
	if err != nil || st.Generations[gen] == nil || st.Generations[gen].Pack == nil {
		return fmt.Errorf("the sync recorded no pack for generation %q: %v", gen, err)
	}
	pk := st.Generations[gen].Pack
	say("first sync: %s (generation %s; building it %s, packing it %s)", syncTook.Round(time.Millisecond), gen,
		logDuration(logs, "built generation", "link"), logDuration(logs, "packed generation", "took"))
	say("pack: %d files, %.1f MB (%.1f MB compressed); %d files (%.1f MB) left on the volume", pk.Files, float64(pk.Bytes)/1e6, float64(pk.Size)/1e6, pk.Links, float64(pk.Linked)/1e6)

	// (c) a plain venv on the same mount.
	pipVenv := filepath.Join(base, "pipvenv")
	if o.pip {
		t0 := time.Now()
		if out, err := exec.Command(o.python, "-m", "venv", pipVenv).CombinedOutput(); err != nil {
			return fmt.Errorf("python -m venv: %v\n%s", err, out)
		}
		args := []string{"-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q"}
		for _, w := range ws {
			args = append(args, w.Path)
		}
		if out, err := exec.Command(filepath.Join(pipVenv, "bin", "python"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("pip install: %v\n%s", err, tail(string(out)))
		}
		say("plain venv on the same mount (python -m venv, pip install): %s", time.Since(t0).Round(time.Millisecond))
	}

	// The modules of the largest packages, as the handler imports them.
	volGen := filepath.Join(vol, ".volboot", "envs", gen)
	mods, err := modules(volGen, specs[:4])
	if err != nil {
		return err
	}
	list := filepath.Join(tmp, "modules.txt")
	if err := os.WriteFile(list, []byte(strings.Join(mods, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	script := filepath.Join(tmp, "imports.py")
	if err := os.WriteFile(script, []byte(importScript), 0o644); err != nil {
		return err
	}
	say("importing %d modules of %s in a fresh interpreter, caches cold (the client remounted before each)", len(mods), strings.Join([]string{specs[0].Name, specs[1].Name, specs[2].Name, specs[3].Name}, ", "))

	// (b)'s extra boot: the local tree laid out from the pack, the volume
	// remounted first; then the reuse a later boot of the same container
	// makes.
	var unpack, reuse []time.Duration
	layOut := func(fresh bool) error {
		if fresh {
			if err := os.RemoveAll(localDir); err != nil {
				return err
			}
		}
		if err := remount(); err != nil {
			return err
		}
		_, logs, _, err := volboot("run", "--layout", "local", "--local-dir", localDir, "--", "true")
		if err != nil {
			return err
		}
		d, err := layoutTook(logs)
		if err != nil {
			return err
		}
		if fresh {
			unpack = append(unpack, d)
		} else {
			reuse = append(reuse, d)
		}
		return nil
	}
	variants := []struct {
		name, python string
	}{
		{"(a) volume layout", filepath.Join(volGen, "bin", "python")},
		{"(b) local layout", filepath.Join(localDir, "envs", gen, "bin", "python")},
		{"(c) pip venv on the mount", filepath.Join(pipVenv, "bin", "python")},
	}
	if !o.pip {
		variants = variants[:2]
	}
	times := make([][]time.Duration, len(variants))
	inner := make([][]time.Duration, len(variants))
	for round := 0; round < o.runs; round++ {
		if err := layOut(true); err != nil {
			return err
		}
		if err := layOut(false); err != nil {
			return err
		}
		for i, v := range variants {
			if err := remount(); err != nil {
				return err
			}
			cmd := exec.Command(v.python, script, list)
			t0 := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s: %v\n%s", v.name, err, tail(string(out)))
			}
			f := strings.Fields(string(out))
			if len(f) != 3 || f[0] != "imported" {
				return fmt.Errorf("%s printed %q", v.name, out)
			}
			sec, _ := strconv.ParseFloat(f[2], 64)
			times[i] = append(times[i], took)
			inner[i] = append(inner[i], time.Duration(sec*float64(time.Second)))
		}
	}
	for i, v := range variants {
		say("%-28s %8s (the imports alone %s; runs %v)", v.name, median(times[i]).Round(time.Millisecond), median(inner[i]).Round(time.Millisecond), rounded(times[i]))
	}
	a, b := median(times[0]), median(times[1])
	say("import time (a) / (b) = %.1fx (goal >= 20)", float64(a)/float64(b))
	if o.pip {
		say("import time (c) / (b) = %.1fx", float64(median(times[2]))/float64(b))
	}

	disk, err := du(filepath.Join(localDir, "envs", gen))
	if err != nil {
		return err
	}
	envSize := pk.Bytes + pk.Linked
	scaled := time.Duration(float64(median(unpack)) * float64(f5files) / float64(files))
	say("(b)'s extra boot, laying out %d files from the pack: %s (runs %v); at F5 size (%d wheel files, scaled by the stack's wheel files): about %s (goal <= 5 s); a reused tree: %s",
		pk.Files, median(unpack).Round(time.Millisecond), rounded(unpack), f5files, scaled.Round(100*time.Millisecond), median(reuse).Round(time.Microsecond))
	say("(b)'s local disk: %.1f MB of the environment's %.1f MB = %.1f%% (goal <= 15%%)", float64(disk)/1e6, float64(envSize)/1e6, 100*float64(disk)/float64(envSize))

	// What pack-only small files would save a first install: the pack's
	// files created on the mount (the pack laid out onto MooseFS), which
	// the store and the generation each do once today.
	if !o.local {
		onMount := filepath.Join(base, "tree-on-mount")
		if err := remount(); err != nil {
			return err
		}
		_, logs, _, err := volboot("run", "--layout", "local", "--local-dir", onMount, "--local-budget", "1000G", "--", "true")
		if err != nil {
			return err
		}
		d, err := layoutTook(logs)
		if err != nil {
			return err
		}
		say("creating the pack's %d files on MooseFS: %s; the store and the generation each create them once in a first install today, so keeping small files only in packs would save up to about %s of the first sync's %s (%.0f%%)",
			pk.Files, d.Round(time.Millisecond), (2 * d).Round(time.Millisecond), syncTook.Round(time.Millisecond), 100*float64(2*d)/float64(syncTook))
	}
	return nil
}

// importScript imports the modules listed in argv[1] and prints how long
// that took inside the interpreter.
const importScript = `import importlib, sys, time
mods = [l.strip() for l in open(sys.argv[1]) if l.strip()]
t = time.perf_counter()
for m in mods:
    importlib.import_module(m)
print("imported", len(mods), time.perf_counter() - t)
`

// modules lists the importable modules of specs' packages in the
// generation at gen.
func modules(gen string, specs []synthstack.Spec) ([]string, error) {
	sp, err := filepath.Glob(filepath.Join(gen, "lib", "python*", "site-packages"))
	if err != nil || len(sp) != 1 {
		return nil, fmt.Errorf("site-packages of %s: %v", gen, sp)
	}
	var mods []string
	for _, s := range specs {
		root := filepath.Join(sp[0], filepath.FromSlash(strings.ReplaceAll(s.Module(), ".", "/")))
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".py") {
				return err
			}
			rel, _ := filepath.Rel(sp[0], strings.TrimSuffix(p, ".py"))
			rel = strings.TrimSuffix(strings.TrimSuffix(rel, "__init__"), "/")
			mods = append(mods, strings.ReplaceAll(rel, "/", "."))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(mods)
	return mods, nil
}

// layoutTook finds how long the local layout took in a run's logs.
func layoutTook(logs string) (time.Duration, error) {
	for _, l := range strings.Split(logs, "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Took string `json:"took"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil || !strings.HasPrefix(rec.Msg, "layout local:") {
			continue
		}
		return time.ParseDuration(rec.Took)
	}
	return 0, fmt.Errorf("the run did not lay out locally:\n%s", tail(logs))
}

// logDuration finds field of the first log line whose msg starts with msg.
func logDuration(logs, msg, field string) string {
	for _, l := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		if m, _ := rec["msg"].(string); strings.HasPrefix(m, msg) {
			if v, ok := rec[field].(string); ok {
				return v
			}
		}
	}
	return "?"
}

// du is the disk space the tree at dir takes (blocks, links counted once).
func du(dir string) (int64, error) {
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	if err != nil {
		return 0, fmt.Errorf("du %s: %v", dir, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0, fmt.Errorf("du printed %q", out)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

func statsAtFullScale() (wheels, files int, size, unpacked int64) {
	for _, s := range synthstack.F5Shaped(1) {
		n, b := s.Members()
		wheels++
		files += n
		unpacked += b
	}
	return wheels, files, 0, unpacked
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return out
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// writeManifest writes the manifest and lock of ws: one required group
// naming every wheel.
func writeManifest(manifest string, ws []synthstack.Wheel, base string) error {
	if err := os.MkdirAll(filepath.Dir(manifest), 0o755); err != nil {
		return err
	}
	var reqs []string
	var entries []synthstack.Entry
	for _, w := range ws {
		reqs = append(reqs, w.Spec.Name+"=="+w.Spec.Version)
		entries = append(entries, w.Entry("core", base+testindex.FileURLPath(w.Filename)))
	}
	if err := os.WriteFile(manifest, synthstack.Manifest("bench-localimport", "pylock.toml", []synthstack.Group{{Name: "core", Required: true, Requirements: reqs}}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(filepath.Dir(manifest), "pylock.toml"), synthstack.Lock(entries), 0o644)
}
