// Command fetch benchmarks volboot's downloader against curl, side by side
// in one run, on the same local test index and the same filesystem:
//
//  1. one big file (default 2 GiB): volboot vs one curl;
//  2. 200 small files: volboot (parallel) vs curl run sequentially, both as
//     one curl process per file and as one curl process fetching all URLs.
//
// A file counts once it is durable: volboot fsyncs before its rename; curl's
// time includes `sync FILE...` (fsync of exactly the files it wrote).
// volboot runs as a child process (this binary with -child) so its start-up
// is counted like curl's and its peak RSS can be read from rusage.
//
// VOLBOOT_BENCH_CPUPROFILE=FILE writes the volboot child's CPU profile.
//
// Each comparison runs -rounds times in rotating order; medians are
// reported, with every round's time.
//
//	go run ./bench/fetch [-dir DIR] [-big 2G] [-small 200] [-jobs 8] [-rounds 3]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/integration/testindex"

	"github.com/volboot/volboot/bench/procmem"
)

type childSpec struct {
	Jobs  int          `json:"jobs"`
	Items []fetch.Item `json:"items"`
}

func main() {
	child := flag.Bool("child", false, "internal: fetch the items given as JSON on stdin")
	dir := flag.String("dir", "", "directory to download into (default: a new one under $TMPDIR)")
	bigSize := flag.String("big", "2G", "size of the big file")
	small := flag.Int("small", 200, "number of small files")
	jobs := flag.Int("jobs", 8, "volboot's files at once (and per host)")
	rounds := flag.Int("rounds", 3, "rounds per comparison (the median is reported)")
	flag.Parse()
	var err error
	if *child {
		err = runChild()
	} else {
		err = run(*dir, *bigSize, *small, *jobs, *rounds)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fetch:", err)
		os.Exit(1)
	}
}

func runChild() error {
	if p := os.Getenv("VOLBOOT_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var spec childSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	f := fetch.New(fetch.Options{Jobs: spec.Jobs, PerHost: spec.Jobs})
	if _, err := f.Fetch(context.Background(), spec.Items); err != nil {
		return err
	}
	m, err := procmem.Self()
	if err != nil {
		return err
	}
	fmt.Println(m.Peak)
	return nil
}

type outcome struct {
	elapsed time.Duration
	rss     int64
	cpu     time.Duration
}

func cpuOf(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }

func run(dir, bigSize string, nSmall, jobs, rounds int) error {
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("curl not found: install it (apt-get install -y curl)")
	}
	big, err := fetch.ParseSize(bigSize)
	if err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "volboot-bench-fetch"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	idx := testindex.New()
	bigContent := testindex.NewGenerated(big, 1)
	if big > 0 {
		fmt.Printf("preparing: hashing %s of generated content...\n", human(big))
	}
	bigSHA, err := testindex.SHA256(bigContent)
	if err != nil {
		return err
	}
	if err := idx.AddFile("/files/big.bin", bigContent); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(3, 4))
	type smallFile struct {
		name, sha string
		size      int64
	}
	var smalls []smallFile
	var smallTotal int64
	for i := 0; i < nSmall; i++ {
		// Sizes of small wheels: 8 KiB to 1 MiB, log-uniform.
		size := int64(8<<10) << r.IntN(8)
		size += r.Int64N(size)
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		sum := sha256.Sum256(data)
		name := fmt.Sprintf("small%03d.whl", i)
		if err := idx.AddFile("/files/"+name, testindex.Bytes(data)); err != nil {
			return err
		}
		smalls = append(smalls, smallFile{name, hex.EncodeToString(sum[:]), size})
		smallTotal += size
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: idx}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	fresh := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		if err := os.RemoveAll(d); err != nil {
			return "", err
		}
		return d, os.MkdirAll(d, 0o755)
	}
	volboot := func(items []fetch.Item) (outcome, error) {
		b, _ := json.Marshal(childSpec{Jobs: jobs, Items: items})
		cmd := exec.Command(self, "-child")
		cmd.Stdin = strings.NewReader(string(b))
		cmd.Stderr = os.Stderr
		start := time.Now()
		out, err := cmd.Output()
		if err != nil {
			return outcome{}, fmt.Errorf("volboot child: %w", err)
		}
		el := time.Since(start)
		var rss int64
		if _, err := fmt.Sscan(string(out), &rss); err != nil {
			return outcome{}, fmt.Errorf("volboot child printed %q: %w", out, err)
		}
		return outcome{el, rss, cpuOf(cmd.ProcessState)}, nil
	}
	timed := func(cmds ...*exec.Cmd) (outcome, error) {
		start := time.Now()
		var cpu time.Duration
		for _, c := range cmds {
			c.Stderr = os.Stderr
			if err := c.Run(); err != nil {
				return outcome{}, fmt.Errorf("%s: %w", strings.Join(c.Args[:min(len(c.Args), 3)], " "), err)
			}
			cpu += cpuOf(c.ProcessState)
		}
		return outcome{elapsed: time.Since(start), cpu: cpu}, nil
	}

	fmt.Printf("filesystem: %s\n\n", dir)
	// contender is one side of a comparison: it downloads into a fresh
	// directory and reports its outcome; the directory is removed after.
	type contender struct {
		name string
		run  func(dir string) (outcome, error)
	}
	// compare runs every contender `rounds` times, rotating the order each
	// round (so none always runs first, on a colder or busier machine), and
	// returns each one's median outcome.
	compare := func(cs []contender) ([]outcome, [][]time.Duration, error) {
		all := make([][]outcome, len(cs))
		times := make([][]time.Duration, len(cs))
		for r := 0; r < rounds; r++ {
			for k := range cs {
				i := (k + r) % len(cs)
				d, err := fresh(fmt.Sprintf("%s-%d", strings.ReplaceAll(cs[i].name, " ", "-"), r))
				if err != nil {
					return nil, nil, err
				}
				o, err := cs[i].run(d)
				os.RemoveAll(d)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", cs[i].name, err)
				}
				all[i] = append(all[i], o)
				times[i] = append(times[i], o.elapsed)
			}
		}
		med := make([]outcome, len(cs))
		for i := range all {
			sort.Slice(all[i], func(a, b int) bool { return all[i][a].elapsed < all[i][b].elapsed })
			med[i] = all[i][len(all[i])/2]
		}
		return med, times, nil
	}
	show := func(ts []time.Duration) string {
		var parts []string
		for _, t := range ts {
			parts = append(parts, fmt.Sprintf("%.2f", t.Seconds()))
		}
		return "rounds " + strings.Join(parts, " ") + " s"
	}

	benchBig := func() error {
		med, times, err := compare([]contender{
			{"volboot", func(d string) (outcome, error) {
				return volboot([]fetch.Item{{Name: "big", URLs: []string{base + "/files/big.bin"}, Size: big,
					Digest: fetch.Digest{Kind: fetch.SHA256, Hex: bigSHA}, Dest: filepath.Join(d, bigSHA+".bin")}})
			}},
			{"curl", func(d string) (outcome, error) {
				cf := filepath.Join(d, "big.bin")
				o, err := timed(exec.Command("curl", "-sSf", "-o", cf, base+"/files/big.bin"), exec.Command("sync", cf))
				if err == nil {
					if fi, serr := os.Stat(cf); serr != nil || fi.Size() != big {
						err = fmt.Errorf("curl wrote a wrong big file: %v", serr)
					}
				}
				return o, err
			}},
		})
		if err != nil {
			return err
		}
		vb, cb := med[0], med[1]
		vRate, cRate := float64(big)/vb.elapsed.Seconds(), float64(big)/cb.elapsed.Seconds()
		fmt.Printf("big file (%s, sha256 verified by volboot only), median of %d:\n", human(big), rounds)
		fmt.Printf("  volboot  %8.2fs  %8.1f MiB/s  cpu %6.2fs  peak RSS %.1f MiB  (%s)\n", vb.elapsed.Seconds(), vRate/(1<<20), vb.cpu.Seconds(), float64(vb.rss)/(1<<20), show(times[0]))
		fmt.Printf("  curl     %8.2fs  %8.1f MiB/s  cpu %6.2fs  (curl + sync FILE; %s)\n", cb.elapsed.Seconds(), cRate/(1<<20), cb.cpu.Seconds(), show(times[1]))
		fmt.Printf("  ratio volboot/curl throughput: %.2fx (goal >= 0.90x)\n\n", vRate/cRate)
		return nil
	}
	benchSmall := func() error {
		med, times, err := compare([]contender{
			{"volboot", func(d string) (outcome, error) {
				var items []fetch.Item
				for _, s := range smalls {
					items = append(items, fetch.Item{Name: s.name, URLs: []string{base + "/files/" + s.name}, Size: s.size,
						Digest: fetch.Digest{Kind: fetch.SHA256, Hex: s.sha}, Dest: filepath.Join(d, s.sha+".whl")})
				}
				return volboot(items)
			}},
			{"curl per file", func(d string) (outcome, error) {
				var cmds []*exec.Cmd
				var files []string
				for _, s := range smalls {
					p := filepath.Join(d, s.name)
					files = append(files, p)
					cmds = append(cmds, exec.Command("curl", "-sSf", "-o", p, base+"/files/"+s.name))
				}
				return timed(append(cmds, exec.Command("sync", files...))...)
			}},
			{"curl all URLs", func(d string) (outcome, error) {
				args := []string{"-sSf"}
				var files []string
				for _, s := range smalls {
					p := filepath.Join(d, s.name)
					files = append(files, p)
					args = append(args, "-o", p, base+"/files/"+s.name)
				}
				return timed(exec.Command("curl", args...), exec.Command("sync", files...))
			}},
		})
		if err != nil {
			return err
		}
		vs, cs, cs1 := med[0], med[1], med[2]
		fmt.Printf("%d small files (%s total, 8 KiB-2 MiB each), median of %d:\n", nSmall, human(smallTotal), rounds)
		fmt.Printf("  volboot (jobs %d)              %7.2fs  %6.1f files/s  cpu %6.2fs  peak RSS %.1f MiB  (%s)\n", jobs, vs.elapsed.Seconds(), float64(nSmall)/vs.elapsed.Seconds(), vs.cpu.Seconds(), float64(vs.rss)/(1<<20), show(times[0]))
		fmt.Printf("  curl, one process per file    %7.2fs  %6.1f files/s  cpu %6.2fs  (%s)\n", cs.elapsed.Seconds(), float64(nSmall)/cs.elapsed.Seconds(), cs.cpu.Seconds(), show(times[1]))
		fmt.Printf("  curl, one process, all URLs   %7.2fs  %6.1f files/s  cpu %6.2fs  (%s)\n", cs1.elapsed.Seconds(), float64(nSmall)/cs1.elapsed.Seconds(), cs1.cpu.Seconds(), show(times[2]))
		fmt.Printf("  speed-up vs curl per file: %.2fx; vs one curl: %.2fx (goal > 1x)\n", cs.elapsed.Seconds()/vs.elapsed.Seconds(), cs1.elapsed.Seconds()/vs.elapsed.Seconds())
		return nil
	}
	if big > 0 {
		if err := benchBig(); err != nil {
			return err
		}
	}
	return benchSmall()
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
