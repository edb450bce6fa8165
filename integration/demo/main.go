// Command demo runs volboot end to end, offline: it builds a small
// wheelhouse (a synthetic tts-demo package with a console script and a model
// loader, plus the machine's real pip wheel), serves it from a local index
// with a fake Hugging Face hub beside it, writes the lock, boots a worker on
// a fresh temporary volume with manifests/demo.toml and
// examples/demo_handler.py, prints the /ping codes it sees, one answer of
// the handler, the exit code after SIGTERM, and then the in-sync boot time
// of a second worker. It exits non-zero when any of that goes wrong.
//
// Run it from the repository root: go run ./integration/demo -volboot bin/volboot
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
	"github.com/volboot/volboot/integration/fakehub"
	"github.com/volboot/volboot/integration/testindex"
)

func main() {
	bin := flag.String("volboot", "bin/volboot", "the volboot binary")
	keep := flag.Bool("keep", false, "keep the temporary volume")
	dir := flag.String("dir", "", "work in this (new or empty) directory and keep it, instead of a temporary one")
	flag.Parse()
	if err := run(*bin, *dir, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("demo: OK")
}

func say(format string, args ...any) { fmt.Printf("demo: "+format+"\n", args...) }

func run(bin, dir string, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	tmp := dir
	if tmp == "" {
		tmp, err = os.MkdirTemp("", "volboot-demo-")
	} else {
		keep = true
		err = os.MkdirAll(tmp, 0o755)
	}
	if err != nil {
		return err
	}
	if keep {
		say("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	vol := filepath.Join(tmp, "volume")
	work := filepath.Join(tmp, "work")
	wheels := filepath.Join(tmp, "wheels")
	for _, d := range []string{vol, work, wheels} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	// 1. The wheelhouse.
	if _, _, err := wheeltest.Write(wheels, ttsDemoWheel()); err != nil {
		return fmt.Errorf("build tts-demo wheel: %w", err)
	}
	pipWheel, err := realPipWheel()
	if err != nil {
		return err
	}
	if err := copyFile(pipWheel, filepath.Join(wheels, filepath.Base(pipWheel))); err != nil {
		return err
	}
	say("wheelhouse: tts-demo-1.0.0 (built here) and %s (the machine's own)", filepath.Base(pipWheel))

	// 2. The local index and the fake hub with its CDN.
	index := testindex.New()
	defer index.Close()
	if err := index.AddWheelDir(wheels); err != nil {
		return err
	}
	hub := fakehub.New(fakehub.Options{})
	// The CDN runs on another loopback host, so that credentials for the
	// hub would not reach it (as on the real hub).
	hubs, err := fakehub.Start(hub)
	if err != nil {
		return err
	}
	defer hubs.Close()
	voice := make([]byte, 4<<20)
	rand.Read(voice)
	commit, err := hub.Commit("model", "volboot/demo-voice", map[string]fakehub.File{
		"voice.bin":   {Content: fakehub.Bytes(voice), LFS: true},
		"config.json": {Content: fakehub.Bytes([]byte(`{"sample_rate": 24000}` + "\n"))},
	}, "main")
	if err != nil {
		return err
	}
	indexSrv := httptest.NewServer(index)
	defer indexSrv.Close()
	say("index %s/simple/, hub %s (commit %s), CDN %s", indexSrv.URL, hubs.URL, commit[:12], hubs.CDNURL)

	// 3. The manifest and its lock.
	manifest, err := os.ReadFile("manifests/demo.toml")
	if err != nil {
		return fmt.Errorf("run the demo from the repository root: %w", err)
	}
	manifestPath := filepath.Join(work, "demo.toml")
	if err := os.WriteFile(manifestPath, manifest, 0o644); err != nil {
		return err
	}
	lock, err := writeLock(index, indexSrv.URL, wheels)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "demo.pylock.toml"), lock, 0o644); err != nil {
		return err
	}

	// 4. First boot on an empty volume.
	healthPort, err := freePort()
	if err != nil {
		return err
	}
	handlerPort, err := freePort()
	if err != nil {
		return err
	}
	env := append(os.Environ(),
		"HF_ENDPOINT="+hubs.URL,
		"DEMO_PORT="+fmt.Sprint(handlerPort),
		"VOLBOOT_LOG_FORMAT=console",
	)
	args := []string{"run", "--volume", vol, "--create-volume", "--manifest", manifestPath, "--health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort)}
	say("first boot: volboot %s", strings.Join(args, " "))
	w, err := boot(bin, args, env, healthPort)
	if err != nil {
		return err
	}
	say("/ping codes seen: %s (ready after %s)", strings.Join(w.codes, " "), w.ready.Round(time.Millisecond))
	answer, err := postRun(handlerPort)
	if err != nil {
		w.cmd.Process.Kill()
		return err
	}
	say("POST /run answered: %s", answer)
	if err := w.stop(); err != nil {
		return err
	}

	// 5. Second boot: the volume is in sync, so volboot goes straight to
	// the handler.
	say("second boot on the same volume")
	w, err = boot(bin, args, env, healthPort)
	if err != nil {
		return err
	}
	say("/ping codes seen: %s (ready after %s, most of it the handler's own warm load)", strings.Join(w.codes, " "), w.ready.Round(time.Millisecond))
	if err := w.stop(); err != nil {
		return err
	}
	t0 := time.Now()
	sync := exec.Command(bin, "sync", "--volume", vol, "--create-volume", "--manifest", manifestPath)
	sync.Env = env
	out, err := sync.CombinedOutput()
	if err != nil {
		return fmt.Errorf("in-sync sync: %v\n%s", err, out)
	}
	say("in-sync boot (the whole volboot sync process) took %s", time.Since(t0).Round(time.Microsecond))
	status := exec.Command(bin, "status", "--volume", vol, "--create-volume", "--manifest", manifestPath)
	status.Env = env
	out, err = status.CombinedOutput()
	fmt.Print(string(out))
	if err != nil {
		// An optional group degraded on purpose is not drift: the volume
		// is as good as it can be until the group's retry is due.
		return fmt.Errorf("status after a successful sync: %v", err)
	}
	return nil
}

// worker is a running `volboot run`.
type worker struct {
	cmd    *exec.Cmd
	exited chan error
	codes  []string
	ready  time.Duration
}

// boot starts `volboot run` and waits until /ping answers 200.
func boot(bin string, args, env []string, healthPort int) (*worker, error) {
	start := time.Now()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &worker{cmd: cmd, exited: make(chan error, 1)}
	go func() { w.exited <- cmd.Wait() }()
	codes, err := watchPing(healthPort, w.exited, 3*time.Minute)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	w.codes, w.ready = codes, time.Since(start)
	return w, nil
}

// stop sends SIGTERM and checks that volboot exits 0 (the handler exits
// cleanly on SIGTERM).
func (w *worker) stop() error {
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.exited:
		code := exitCode(err)
		say("after SIGTERM volboot exited with code %d", code)
		if code != 0 {
			return fmt.Errorf("exit code %d after SIGTERM, want 0 (the handler exits cleanly)", code)
		}
		return nil
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		return errors.New("volboot did not exit within 30s of SIGTERM")
	}
}

// ttsDemoWheel is the synthetic package: a model loader that follows the
// Hugging Face cache layout, and a console script.
func ttsDemoWheel() wheeltest.Spec {
	return wheeltest.Spec{
		Name: "tts_demo", Version: "1.0.0",
		Files: []wheeltest.File{
			{Name: "tts_demo/__init__.py", Data: []byte(`"""A stand-in for a TTS package: loads a model file from the HF cache."""
import hashlib, os

__version__ = "1.0.0"


def model_path(repo, filename, revision="main"):
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    base = os.path.join(hub, "models--" + repo.replace("/", "--"))
    commit = revision
    ref = os.path.join(base, "refs", revision)
    if os.path.exists(ref):
        with open(ref) as f:
            commit = f.read().strip()
    return os.path.join(base, "snapshots", commit, filename)


def load(repo, filename, revision="main"):
    with open(model_path(repo, filename, revision), "rb") as f:
        data = f.read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
`)},
			{Name: "tts_demo/cli.py", Data: []byte(`import sys
from . import __version__


def main():
    print("tts-demo " + __version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
`)},
		},
		EntryPoints: "[console_scripts]\ntts-demo = tts_demo.cli:main\n",
	}
}

// realPipWheel finds the pip wheel the machine's Python bundles.
func realPipWheel() (string, error) {
	out, err := exec.Command("python3", "-c", "import ensurepip, os; print(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))").Output()
	if err != nil {
		return "", fmt.Errorf("find ensurepip's bundled wheels: %w", err)
	}
	matches, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "pip-*.whl"))
	if len(matches) == 0 {
		return "", errors.New("python3 bundles no pip wheel (ensurepip/_bundled)")
	}
	return matches[0], nil
}

// writeLock writes the PEP 751 lock of the wheelhouse, served by the index,
// plus an optional package whose wheel the index does not have (404).
func writeLock(index *testindex.Server, base, wheels string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("lock-version = \"1.0\"\nrequires-python = \">=3.9\"\ndependency-groups = [\"demo\", \"extras\"]\ncreated-by = \"volboot demo\"\n")
	ents, err := os.ReadDir(wheels)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name, version, _ := strings.Cut(strings.TrimSuffix(e.Name(), ".whl"), "-")
		version, _, _ = strings.Cut(version, "-")
		urlPath := testindex.FileURLPath(e.Name())
		sha, err := index.SHA256(urlPath)
		if err != nil {
			return nil, err
		}
		fi, _ := e.Info()
		fmt.Fprintf(&b, "\n[[packages]]\nname = %q\nversion = %q\nmarker = \"'demo' in dependency_groups\"\n[[packages.wheels]]\nname = %q\nurl = %q\nsize = %d\nhashes = { sha256 = %q }\n",
			strings.ReplaceAll(name, "_", "-"), version, e.Name(), base+urlPath, fi.Size(), sha)
	}
	fmt.Fprintf(&b, "\n[[packages]]\nname = \"tts-demo-extras\"\nversion = \"1.0.0\"\nmarker = \"'extras' in dependency_groups\"\n[[packages.wheels]]\nname = \"tts_demo_extras-1.0.0-py3-none-any.whl\"\nurl = \"%s/files/tts_demo_extras-1.0.0-py3-none-any.whl\"\nsize = 1000\nhashes = { sha256 = \"%s\" }\n",
		base, strings.Repeat("ab", 32))
	return b.Bytes(), nil
}

// watchPing polls /ping until 200, recording each change of code.
func watchPing(port int, exited <-chan error, limit time.Duration) ([]string, error) {
	var codes []string
	last := ""
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return codes, fmt.Errorf("volboot exited before the handler was ready (%v); /ping codes seen: %v", err, codes)
		default:
		}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", port))
		code := "refused"
		if err == nil {
			code = fmt.Sprint(resp.StatusCode)
			resp.Body.Close()
		}
		if code != last && code != "refused" {
			codes = append(codes, code)
			last = code
		}
		switch code {
		case "200":
			return codes, nil
		case "503":
			return codes, errors.New("/ping answered 503: the bootstrap or handler failed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return codes, fmt.Errorf("not ready within %s; /ping codes seen: %v", limit, codes)
}

func postRun(port int) (string, error) {
	body := `{"input": {"name": "volboot"}}`
	var lastErr error
	for i := 0; i < 50; i++ {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/run", port), "application/json", strings.NewReader(body))
		if err != nil {
			lastErr = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("POST /run: %s: %s", resp.Status, b)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return "", fmt.Errorf("POST /run answered non-JSON %q", b)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", fmt.Errorf("POST /run: %w", lastErr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
