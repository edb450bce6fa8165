// Command models benchmarks volboot's model fetch (bootstrap/models over
// bootstrap/fetch) against curl, side by side in one run, from the same
// local fake hub (integration/fakehub: resolve endpoint on 127.0.0.1, LFS
// redirect to a CDN on another loopback host) into the same filesystem.
//
// One LFS file (default 2 GiB). volboot runs as a child process (this
// binary with -child) so its start-up counts like curl's; its time covers
// the HEAD, the download with sha256 verified in the stream, the fsync and
// rename of the blob, the snapshot link and the ref. curl's time covers
// `curl -L` through the same redirect plus `sync FILE`, so both are counted
// once durable. Runs alternate (volboot, curl, volboot, curl, ...) and each
// side's best and median are printed.
//
//	go run ./bench/models [-dir DIR] [-size 2G] [-runs 3]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/models"
	"github.com/volboot/volboot/integration/fakehub"
	"github.com/volboot/volboot/integration/testindex"
)

type childSpec struct {
	Endpoint string       `json:"endpoint"`
	HubDir   string       `json:"hub_dir"`
	Model    models.Model `json:"model"`
}

func main() {
	child := flag.Bool("child", false, "internal: sync the model given as JSON on stdin")
	dir := flag.String("dir", "", "directory to download into (default: a new one under $TMPDIR)")
	size := flag.String("size", "2G", "size of the model file")
	runs := flag.Int("runs", 3, "runs of each side")
	flag.Parse()
	var err error
	if *child {
		err = runChild()
	} else {
		err = run(*dir, *size, *runs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/models:", err)
		os.Exit(1)
	}
}

func runChild() error {
	var spec childSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	log := zap.NewNop()
	if os.Getenv("BENCH_MODELS_LOG") != "" {
		log, _ = zap.NewDevelopment()
	}
	f := fetch.New(fetch.Options{Logger: log})
	s, err := models.New(models.Options{Endpoint: spec.Endpoint, HubDir: spec.HubDir, Fetcher: f, Logger: log})
	if err != nil {
		return err
	}
	res := s.Sync(context.Background(), []models.Model{spec.Model})
	if res[0].Err != nil {
		return res[0].Err
	}
	if res[0].Downloaded != 1 {
		return fmt.Errorf("downloaded %d blobs, want 1", res[0].Downloaded)
	}
	return nil
}

func run(dir, sizeStr string, runs int) error {
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("curl not found: install it (apt-get install -y curl)")
	}
	size, err := fetch.ParseSize(sizeStr)
	if err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "volboot-bench-models"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	hub := fakehub.New(fakehub.Options{})
	fmt.Printf("preparing: hashing %s of generated content...\n", human(size))
	content := testindex.NewGenerated(size, 7)
	commit, err := hub.Commit("model", "bench/big", map[string]fakehub.File{
		"model.safetensors": {Content: content, LFS: true},
		"config.json":       {Content: fakehub.Bytes([]byte(`{"bench": true}`))},
	}, "main")
	if err != nil {
		return err
	}
	srv, err := fakehub.Start(hub)
	if err != nil {
		return err
	}
	defer srv.Close()
	sha, _ := hub.ETag("model", "bench/big", "main", "model.safetensors")
	fmt.Printf("hub %s, CDN %s, commit %s\nfilesystem: %s\n\n", srv.URL, srv.CDNURL, commit[:12], dir)

	fresh := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		if err := os.RemoveAll(d); err != nil {
			return "", err
		}
		return d, os.MkdirAll(d, 0o755)
	}
	volboot := func() (time.Duration, error) {
		hubDir, err := fresh("volboot-hub")
		if err != nil {
			return 0, err
		}
		b, _ := json.Marshal(childSpec{Endpoint: srv.URL, HubDir: hubDir, Model: models.Model{Repo: "bench/big", Files: []string{"model.safetensors"}}})
		cmd := exec.Command(self, "-child")
		cmd.Stdin = bytesReader(b)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("volboot child: %w", err)
		}
		el := time.Since(start)
		fmt.Printf("  volboot child cpu: user %.2fs sys %.2fs\n", cmd.ProcessState.UserTime().Seconds(), cmd.ProcessState.SystemTime().Seconds())
		blob := filepath.Join(models.RepoDir(hubDir, "model", "bench/big"), "snapshots", commit, "model.safetensors")
		if fi, err := os.Stat(blob); err != nil || fi.Size() != size {
			return 0, fmt.Errorf("volboot's snapshot file: %v", err)
		}
		if st := models.Check(hubDir, models.Model{Repo: "bench/big", Files: []string{"model.safetensors"}}, nil); !st.Complete {
			return 0, fmt.Errorf("volboot's cache incomplete: %v", st.Problems)
		}
		return el, os.RemoveAll(hubDir)
	}
	// curl returns the time to durable bytes, and (for context only) the
	// time until curl itself exited, before the sync.
	curl := func() (durable, exited time.Duration, err error) {
		d, err := fresh("curl")
		if err != nil {
			return 0, 0, err
		}
		f := filepath.Join(d, sha)
		start := time.Now()
		for i, c := range []*exec.Cmd{
			exec.Command("curl", "-sSfL", "-o", f, srv.URL+"/bench/big/resolve/main/model.safetensors"),
			exec.Command("sync", f),
		} {
			c.Stderr = os.Stderr
			if err := c.Run(); err != nil {
				return 0, 0, fmt.Errorf("%v: %w", c.Args, err)
			}
			if i == 0 {
				exited = time.Since(start)
				fmt.Printf("  curl cpu: user %.2fs sys %.2fs\n", c.ProcessState.UserTime().Seconds(), c.ProcessState.SystemTime().Seconds())
			}
		}
		durable = time.Since(start)
		if fi, err := os.Stat(f); err != nil || fi.Size() != size {
			return 0, 0, fmt.Errorf("curl wrote a wrong file: %v", err)
		}
		return durable, exited, os.RemoveAll(d)
	}

	var vt, ct []time.Duration
	for i := 0; i < runs; i++ {
		v, err := volboot()
		if err != nil {
			return err
		}
		c, cx, err := curl()
		if err != nil {
			return err
		}
		vt, ct = append(vt, v), append(ct, c)
		fmt.Printf("run %d: volboot %.2fs (%.1f MiB/s)   curl+sync %.2fs (%.1f MiB/s; curl alone exited after %.2fs)\n", i+1,
			v.Seconds(), rate(size, v), c.Seconds(), rate(size, c), cx.Seconds())
	}
	vb, vm := stats(vt)
	cb, cm := stats(ct)
	fmt.Printf("\none %s LFS file through the hub's CDN redirect, counted once durable:\n", human(size))
	fmt.Printf("  volboot models  best %6.2fs %8.1f MiB/s   median %6.2fs %8.1f MiB/s  (sha256 verified, cache layout written)\n", vb.Seconds(), rate(size, vb), vm.Seconds(), rate(size, vm))
	fmt.Printf("  curl -L + sync  best %6.2fs %8.1f MiB/s   median %6.2fs %8.1f MiB/s  (no verification)\n", cb.Seconds(), rate(size, cb), cm.Seconds(), rate(size, cm))
	var pair []time.Duration // per-run ratios, as durations for stats(): adjacent runs share the machine's load
	for i := range vt {
		pair = append(pair, time.Duration(float64(time.Second)*ct[i].Seconds()/vt[i].Seconds()))
	}
	_, pm := stats(pair)
	fmt.Printf("  ratio volboot/curl throughput: best %.2fx, median %.2fx, median of per-run ratios %.2fx (goal >= 0.90x)\n",
		cb.Seconds()/vb.Seconds(), cm.Seconds()/vm.Seconds(), pm.Seconds())
	return nil
}

func stats(ds []time.Duration) (best, median time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2]
}

func rate(size int64, d time.Duration) float64 { return float64(size) / d.Seconds() / (1 << 20) }

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
