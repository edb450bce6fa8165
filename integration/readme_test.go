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
