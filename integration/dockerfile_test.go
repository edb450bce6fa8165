package integration

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the module root, two levels above this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// The Dockerfile cannot be built here (no Docker engine), so this test holds
// it to what the Makefile builds: the builder stage runs `make build` (so the
// flags are the Makefile's by construction), the Makefile's build is static
// and trimmed and stamps the version, the runtime stage is the slim Python
// base with the binary where ENTRYPOINT expects it, and no heavy Python
// package is installed into the image.
func TestDockerfileMatchesMakefile(t *testing.T) {
	root := repoRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	d := string(df)
	m := string(mk)

	for _, want := range []string{`CGO_ENABLED=0`, `-trimpath`, `-X main.version=$(VERSION)`, `-o bin/volboot ./cmd/volboot`} {
		if !strings.Contains(m, want) {
			t.Errorf("Makefile's build lacks %q", want)
		}
	}
	stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?`).FindAllStringSubmatch(d, -1)
	if len(stages) != 2 || !strings.HasPrefix(stages[0][1], "golang:1.26") || stages[1][1] != "python:3.11-slim" {
		t.Fatalf("Dockerfile stages = %v; want a golang:1.26 builder then python:3.11-slim", stages)
	}
	if !regexp.MustCompile(`(?m)^RUN make build VERSION=`).MatchString(d) {
		t.Error("the builder stage must run `make build` so that its flags are the Makefile's")
	}
	if !strings.Contains(d, "COPY --from="+stages[0][2]+" /src/bin/volboot /usr/local/bin/volboot") {
		t.Error("the runtime stage must copy bin/volboot to /usr/local/bin/volboot")
	}
	if !strings.Contains(d, `ENTRYPOINT ["/usr/local/bin/volboot", "run", "--"]`) {
		t.Error(`ENTRYPOINT must be ["/usr/local/bin/volboot", "run", "--"]`)
	}
	if !regexp.MustCompile(`(?m)^CMD \[`).MatchString(d) {
		t.Error("a CMD must name the handler")
	}
	if regexp.MustCompile(`(?mi)^RUN .*pip3? install`).MatchString(d) {
		t.Error("the image must not pip install anything: heavy packages belong on the volume")
	}
	for _, src := range regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(\S+) `).FindAllStringSubmatch(d, -1) {
		if strings.HasPrefix(src[1], "/") || src[1] == "." || strings.Contains(src[1], "*") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, src[1])); err != nil {
			t.Errorf("Dockerfile copies %s, which is not in the repository", src[1])
		}
	}
}

// `make build` produces a static binary that reports the stamped version.
func TestMakeBuildIsStatic(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root := repoRoot(t)
	out := t.TempDir()
	// Build into a temporary copy location by overriding nothing but the
	// version: the Makefile writes bin/volboot, which the build below reads.
	cmd := exec.Command("make", "-s", "build", "VERSION=test-1.2.3")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, b)
	}
	bin := filepath.Join(root, "bin", "volboot")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("bin/volboot has a program interpreter: it is dynamically linked")
		}
	}
	v, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "volboot test-1.2.3" {
		t.Fatalf("volboot version = %q, %v", v, err)
	}
	_ = out
}
