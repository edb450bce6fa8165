package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's Dockerfile builds as written (no engine here, so it is held
// to what a build needs): every COPY --from names a stage defined before
// it, the builder runs `make build` where the binary is copied from, the
// files it copies from the repository exist (app/ holds the user's own),
// and the entrypoint is volboot run.
func TestReadmeDockerfileBuildsAsWritten(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```dockerfile\n(.*?)```").FindStringSubmatch(string(readme))
	if m == nil {
		t.Fatal("README.md has no ```dockerfile block")
	}
	stages := map[string]bool{}
	workdir := "/"
	built := ""
	for _, line := range strings.Split(m[1], "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				stages[f[3]] = true
			}
			workdir = "/"
		case "WORKDIR":
			workdir = f[1]
		case "RUN":
			if strings.Contains(line, "make build") {
				built = filepath.Join(workdir, "bin/volboot")
			}
		case "COPY":
			args := f[1:]
			if from, ok := strings.CutPrefix(args[0], "--from="); ok {
				if !stages[from] {
					t.Errorf("%q: no stage %q defined before it", line, from)
				}
				if args[1] != built {
					t.Errorf("%q copies %s; the stage's make build wrote %q", line, args[1], built)
				}
				continue
			}
			for _, src := range args[:len(args)-1] {
				if src == "." || strings.HasPrefix(src, "app/") {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%q: %s is not in the repository", line, src)
				}
			}
		}
	}
	if !strings.Contains(m[1], `ENTRYPOINT ["/usr/local/bin/volboot", "run", "--"]`) {
		t.Error("README.md's Dockerfile must run volboot run as its ENTRYPOINT")
	}
}

// make e2e-real and make bench-real are documented and stay out of `make
// test` and `make bench`, which work offline.
func TestRealTargetsDocumentedAndOptIn(t *testing.T) {
	root := repoRoot(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	makefile, readme, runSh := read("Makefile"), read("README.md"), read("bench/run.sh")
	target := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:[^\n]*\n((?:\t[^\n]*\n)+)`).FindStringSubmatch(makefile)
		if m == nil {
			t.Fatalf("the Makefile has no %s target", name)
		}
		return m[1]
	}
	if r := target("e2e-real"); !strings.Contains(r, e2eRealEnv+"=1") || !strings.Contains(r, "TestE2ERealStack") {
		t.Errorf("make e2e-real does not run TestE2ERealStack with %s=1:\n%s", e2eRealEnv, r)
	}
	if r := target("bench-real"); !strings.Contains(r, "./bench/real") {
		t.Errorf("make bench-real does not run bench/real:\n%s", r)
	}
	for _, name := range []string{"test", "bench"} {
		if r := target(name); strings.Contains(r, e2eRealEnv) || strings.Contains(r, "bench/real") {
			t.Errorf("make %s runs what needs PyPI:\n%s", name, r)
		}
	}
	if strings.Contains(runSh, "bench/real") {
		t.Error("bench/run.sh (make bench, offline) runs bench/real")
	}
	for _, s := range []string{"make e2e-real", "make bench-real", "-pip-moosefs", "16 GB"} {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md does not mention %q", s)
		}
	}
}
