package bootstrap

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
)

// errNoSpace is the errno of a full filesystem.
const errNoSpace = syscall.ENOSPC

// markerEnv is the PEP 508 marker environment of a probed interpreter on
// this machine, with the given dependency groups. The values Python would
// compute from os, sys and platform are derived from the probe: the
// container runs Linux, and the kernel's release and version come from
// uname, which is what platform.release() and platform.version() report.
func markerEnv(info *interp.Info, groups []string) pep508.Environment {
	var u unix.Utsname
	release, version := "", ""
	if unix.Uname(&u) == nil {
		release, version = unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:])
	}
	impl := map[string]string{"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM", "ironpython": "IronPython", "jython": "Jython"}[info.Implementation]
	if impl == "" {
		impl = info.Implementation
	}
	return pep508.Environment{
		Values: map[string]string{
			"os_name":                        "posix",
			"sys_platform":                   "linux",
			"platform_machine":               info.Machine,
			"platform_python_implementation": impl,
			"platform_release":               release,
			"platform_system":                "Linux",
			"platform_version":               version,
			"python_version":                 info.PyVersion(),
			"python_full_version":            info.Version,
			"implementation_name":            info.Implementation,
			"implementation_version":         info.Version,
		},
		DependencyGroups: groups,
	}
}

func rankingOf(info *interp.Info) pep425.Ranking {
	return pep425.NewRanking(info.Tags())
}

// verifyFile checks a local wheel (a lock `path` source) against its
// expected sha256 and size.
func verifyFile(path, sha string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("wheel file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("%s: size %d, the lock says %d", path, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%s: sha256 %s, the lock says %s", path, got, sha)
	}
	return nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// targetFor is the lock target of one group on a probed interpreter.
func targetFor(info *interp.Info, py pep440.Version, group string) pylock.Target {
	return pylock.Target{Env: markerEnv(info, []string{group}), Python: py, Tags: rankingOf(info)}
}
