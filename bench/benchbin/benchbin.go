// Package benchbin gives the benchmarks the volboot binary they time: the
// one a flag names, or one built from the checkout as `make build` builds
// it (static, trimmed paths), so that every benchmark times the same thing.
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
