package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCommand runs the built command with a wheel directory, a generated
// file and a fault, and talks to it over HTTP.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "testindex")
	build := exec.Command(goTool(), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	wheels := filepath.Join(dir, "wheels")
	os.Mkdir(wheels, 0o755)
	os.WriteFile(filepath.Join(wheels, "demo-1.0-py3-none-any.whl"), []byte("wheel bytes"), 0o644)

	cmd := exec.Command(bin, "-dir", wheels, "-generate", "big.bin=1M",
		"-fault", "demo-1.0-py3-none-any.whl=status=503,retry-after=1,times=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("exit after SIGINT: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("no exit after SIGINT")
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSpace(line)
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("first line %q is not the URL", line)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/simple/demo/"); code != 200 || !strings.Contains(body, "demo-1.0-py3-none-any.whl#sha256=") {
		t.Errorf("index page: %d %q", code, body)
	}
	if code, _ := get("/files/demo-1.0-py3-none-any.whl"); code != 503 {
		t.Errorf("first request: %d, want the injected 503", code)
	}
	if code, body := get("/files/demo-1.0-py3-none-any.whl"); code != 200 || body != "wheel bytes" {
		t.Errorf("second request: %d %q", code, body)
	}
	if code, body := get("/files/big.bin"); code != 200 || len(body) != 1<<20 {
		t.Errorf("generated file: %d, %d bytes", code, len(body))
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-fault", "x.whl"}, {"-fault", "nosuch.whl=status=503"}, {"-generate", "a=lots"}, {"-tree", "nodir"}} {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperMain$", "--"}, args...)...)
		cmd.Env = append(os.Environ(), "TESTINDEX_HELPER=1")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "testindex:") {
			t.Errorf("%v: err %v, output %q", args, err, out)
		}
	}
}

// TestHelperMain runs main with the arguments after "--" when re-executed
// by TestBadFlags.
func TestHelperMain(t *testing.T) {
	if os.Getenv("TESTINDEX_HELPER") != "1" {
		t.Skip("helper")
	}
	for i, a := range os.Args {
		if a == "--" {
			os.Args = append([]string{"testindex"}, os.Args[i+1:]...)
			break
		}
	}
	main()
}

// goTool is the go command that built this test: GOROOT's (empty under
// -trimpath), else the one on PATH.
func goTool() string {
	if r := runtime.GOROOT(); r != "" {
		return filepath.Join(r, "bin", "go")
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
