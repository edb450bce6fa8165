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
//	go run ./bench/fetch [-dir DIR] [-big 2G] [-small 200] [-jobs 8]
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
	"strings"
	"time"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/integration/testindex"
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
	flag.Parse()
	var err error
	if *child {
		err = runChild()
	} else {
		err = run(*dir, *bigSize, *small, *jobs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fetch:", err)
		os.Exit(1)
	}
}

func runChild() error {
	var spec childSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	f := fetch.New(fetch.Options{Jobs: spec.Jobs, PerHost: spec.Jobs})
	if _, err := f.Fetch(context.Background(), spec.Items); err != nil {
		return err
	}
	hwm, err := peakRSS()
	if err != nil {
		return err
	}
	fmt.Println(hwm)
	return nil
}

// peakRSS reads this process's VmHWM. wait4's ru_maxrss is no use here: a
// child started through vfork (Go's os/exec) inherits the parent's
// high-water mark — this benchmark holds the small files in memory.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

type outcome struct {
	elapsed time.Duration
	rss     int64
	cpu     time.Duration
}

func cpuOf(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }

func run(dir, bigSize string, nSmall, jobs int) error {
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
	benchBig := func() error {
		// 1. Big file.
		vd, err := fresh("volboot-big")
		if err != nil {
			return err
		}
		vb, err := volboot([]fetch.Item{{Name: "big", URLs: []string{base + "/files/big.bin"}, Size: big,
			Digest: fetch.Digest{Kind: fetch.SHA256, Hex: bigSHA}, Dest: filepath.Join(vd, bigSHA+".bin")}})
		if err != nil {
			return err
		}
		os.RemoveAll(vd)
		cd, err := fresh("curl-big")
		if err != nil {
			return err
		}
		cf := filepath.Join(cd, "big.bin")
		cb, err := timed(exec.Command("curl", "-sSf", "-o", cf, base+"/files/big.bin"), exec.Command("sync", cf))
		if err != nil {
			return err
		}
		if fi, err := os.Stat(cf); err != nil || fi.Size() != big {
			return fmt.Errorf("curl wrote a wrong big file: %v", err)
		}
		os.RemoveAll(cd)
		vRate, cRate := float64(big)/vb.elapsed.Seconds(), float64(big)/cb.elapsed.Seconds()
		fmt.Printf("big file (%s, sha256 verified by volboot only):\n", human(big))
		fmt.Printf("  volboot  %8.2fs  %8.1f MiB/s  cpu %6.2fs  peak RSS %.1f MiB\n", vb.elapsed.Seconds(), vRate/(1<<20), vb.cpu.Seconds(), float64(vb.rss)/(1<<20))
		fmt.Printf("  curl     %8.2fs  %8.1f MiB/s  cpu %6.2fs  (curl + sync FILE)\n", cb.elapsed.Seconds(), cRate/(1<<20), cb.cpu.Seconds())
		fmt.Printf("  ratio volboot/curl throughput: %.2fx (goal >= 0.90x)\n\n", vRate/cRate)

		return nil
	}
	benchSmall := func() error {
		// 2. Small files.
		vd, err := fresh("volboot-small")
		if err != nil {
			return err
		}
		var items []fetch.Item
		for _, s := range smalls {
			items = append(items, fetch.Item{Name: s.name, URLs: []string{base + "/files/" + s.name}, Size: s.size,
				Digest: fetch.Digest{Kind: fetch.SHA256, Hex: s.sha}, Dest: filepath.Join(vd, s.sha+".whl")})
		}
		vs, err := volboot(items)
		if err != nil {
			return err
		}
		cd, err := fresh("curl-small")
		if err != nil {
			return err
		}
		var perFile []*exec.Cmd
		var files []string
		for _, s := range smalls {
			p := filepath.Join(cd, s.name)
			files = append(files, p)
			perFile = append(perFile, exec.Command("curl", "-sSf", "-o", p, base+"/files/"+s.name))
		}
		perFile = append(perFile, exec.Command("sync", files...))
		cs, err := timed(perFile...)
		if err != nil {
			return err
		}
		cd2, err := fresh("curl-small-one")
		if err != nil {
			return err
		}
		oneArgs := []string{"-sSf"}
		var files2 []string
		for _, s := range smalls {
			p := filepath.Join(cd2, s.name)
			files2 = append(files2, p)
			oneArgs = append(oneArgs, "-o", p, base+"/files/"+s.name)
		}
		cs1, err := timed(exec.Command("curl", oneArgs...), exec.Command("sync", files2...))
		if err != nil {
			return err
		}
		for _, d := range []string{vd, cd, cd2} {
			os.RemoveAll(d)
		}
		fmt.Printf("%d small files (%s total, 8 KiB-2 MiB each):\n", nSmall, human(smallTotal))
		fmt.Printf("  volboot (jobs %d)              %7.2fs  %6.1f files/s  cpu %6.2fs  peak RSS %.1f MiB\n", jobs, vs.elapsed.Seconds(), float64(nSmall)/vs.elapsed.Seconds(), vs.cpu.Seconds(), float64(vs.rss)/(1<<20))
		fmt.Printf("  curl, one process per file    %7.2fs  %6.1f files/s  cpu %6.2fs\n", cs.elapsed.Seconds(), float64(nSmall)/cs.elapsed.Seconds(), cs.cpu.Seconds())
		fmt.Printf("  curl, one process, all URLs   %7.2fs  %6.1f files/s  cpu %6.2fs\n", cs1.elapsed.Seconds(), float64(nSmall)/cs1.elapsed.Seconds(), cs1.cpu.Seconds())
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
