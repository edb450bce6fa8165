package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// TestRelativeVolume: --volume given relative to the working directory
// syncs (the smoke check runs elsewhere), and run hands the handler
// absolute VIRTUAL_ENV, PATH and HF_HOME, so that a handler that changes
// directory still runs its generation's interpreter and packages.
func TestRelativeVolume(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("rel", 2, 6)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	rel, err := filepath.Rel(f.work, f.vol)
	if err != nil || filepath.IsAbs(rel) {
		t.Fatalf("no relative path from %s to %s: %v", f.work, f.vol, err)
	}
	abs := f.vol
	f.vol = rel // f.run runs in f.work
	id := f.sync()
	handler := `import os, shutil, sys
os.chdir("/")
import rel_00, rel_01
print("VIRTUAL_ENV=" + os.environ["VIRTUAL_ENV"])
print("HF_HOME=" + os.environ["HF_HOME"])
print("PATH0=" + os.environ["PATH"].split(os.pathsep)[0])
print("PYTHON=" + shutil.which("python"))
print("PREFIX=" + sys.prefix)
`
	r := f.run("run", "--", "python", "-c", handler)
	if r.code != 0 {
		t.Fatalf("run on a relative volume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	gen := filepath.Join(abs, ".volboot", "envs", id)
	for _, want := range []string{"VIRTUAL_ENV=" + gen, "PATH0=" + filepath.Join(gen, "bin"), "PYTHON=" + filepath.Join(gen, "bin", "python"), "PREFIX=" + gen} {
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("the handler's environment lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "HF_HOME="+abs+"/") {
		t.Errorf("HF_HOME is not under the absolute volume %s:\n%s", abs, r.stdout)
	}
	st, sr := f.status("--verify")
	if !st.InSync || *st.Generation != id {
		t.Fatalf("status --verify on the relative volume:\n%s%s", sr.stdout, sr.stderr)
	}
}

// TestStatusReportsDownloadBytes: while `volboot run` downloads, GET
// /status on the health address reports the bytes done and the total.
func TestStatusReportsDownloadBytes(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("bytes", 3, 6)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	slowDownloads(t, f, ws, 3*time.Second)
	var total int64
	for _, w := range ws {
		total += w.Size
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	run := f.start("run", "--health-addr", addr, "--", "python", "-c", "pass")
	var seen string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/status")
		if err == nil {
			var st struct {
				Progress struct {
					Done     int64 `json:"bytes_done"`
					Total    int64 `json:"bytes_total"`
					Packages int   `json:"packages_done"`
					Of       int   `json:"packages_total"`
				} `json:"progress"`
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Progress.Total > 0 {
				seen = fmt.Sprintf("%d of %d", st.Progress.Done, st.Progress.Total)
				if st.Progress.Total != total || st.Progress.Done > total {
					t.Errorf("/status during the download: %s bytes; the wheels are %d bytes", seen, total)
				}
				if st.Progress.Of != len(ws) || st.Progress.Packages > len(ws) {
					t.Errorf("/status during the download: %d of %d packages in the store; want %d in all", st.Progress.Packages, st.Progress.Of, len(ws))
				}
				if st.Progress.Done > 0 {
					break
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := run.wait(); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if seen == "" || strings.HasPrefix(seen, "0 of") {
		t.Fatalf("/status never reported the download's bytes done (last: %q)", seen)
	}
	t.Logf("/status during the download: %s bytes", seen)
}
