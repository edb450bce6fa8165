// Package procmem reads a process's memory figures from /proc for the
// benchmarks and memory tests.
//
// The peak (VmHWM) is read from the process itself, never from the rusage
// a parent gets from wait4: a child started through vfork (as Go's os/exec
// does) inherits the parent's high-water mark into ru_maxrss until it
// execs, so a small child of a big test process would look big.
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mem is a process's resident set now and at its peak, in bytes.
type Mem struct {
	RSS, Peak int64
}

// Self reads this process's figures.
func Self() (Mem, error) { return read("/proc/self/status") }

// Of reads process pid's figures.
func Of(pid int) (Mem, error) { return read("/proc/" + strconv.Itoa(pid) + "/status") }

func read(path string) (Mem, error) {
	var m Mem
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &m.RSS, "VmHWM:": &m.Peak} {
			v, ok := strings.CutPrefix(line, key)
			if !ok {
				continue
			}
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return m, fmt.Errorf("%s: %s %q is not in kB", path, key, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return m, fmt.Errorf("%s: %s %q: %w", path, key, v, err)
			}
			*dst = kb << 10
		}
	}
	if m.RSS == 0 || m.Peak == 0 {
		return m, fmt.Errorf("%s has no VmRSS or VmHWM", path)
	}
	return m, nil
}
