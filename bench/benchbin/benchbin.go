// Package benchbin gives the benchmarks what each needs alike: a fresh work
// directory, and the volboot binary they time (the one a flag names, or one
// built from the checkout as `make build` builds it: static, trimmed paths),
// so that every benchmark times the same thing.
package benchbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Volboot returns the absolute path of given, or, when given is empty, of
// a volboot built from ./cmd/volboot into dir. It must run from the
// repository's root.
func Volboot(dir, given string) (string, error) {
	bin := given
	if bin == "" {
		bin = filepath.Join(dir, "volboot")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/volboot")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build volboot (run from the repository root, or pass -volboot): %v\n%s", err, out)
		}
	}
	return filepath.Abs(bin)
}

// Workdir makes a fresh directory named prefix* under dir (the system's
// temporary directory when dir is empty), making dir first if need be.
func Workdir(dir, prefix string) (string, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	}
	return os.MkdirTemp(dir, prefix)
}
