package mfsrig

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU returns the CPU time (user and system, all threads) that each of the
// rig's MooseFS processes has used since it started, by name: "master",
// "chunkserver", and "mfsmount-<mount point's base name>" for each client.
// A benchmark reads it before and after a run to tell where the run's time
// went: a master or mount busy for most of the wall time is the bound; one
// mostly idle says the run waited on round trips or on something else. A
// process that is not running or cannot be read is left out.
func (r *Rig) CPU() map[string]time.Duration {
	r.mu.Lock()
	servers := []*server{r.master, r.chunk}
	clients := append([]*Client(nil), r.clients...)
	r.mu.Unlock()
	for _, c := range clients {
		c.mu.Lock()
		servers = append(servers, c.proc)
		c.mu.Unlock()
	}
	out := map[string]time.Duration{}
	for _, s := range servers {
		if s == nil || s.cmd.Process == nil {
			continue
		}
		if d, err := processCPU(s.cmd.Process.Pid); err == nil {
			out[s.name] = d
		}
	}
	return out
}

// processCPU reads utime and stime of pid from /proc/<pid>/stat. Fields
// are counted after the command name's closing parenthesis, as the name
// may hold spaces and parentheses (proc(5)).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every
// architecture it exports to user space.
const clockTicks = 100

func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat %q: no command name", stat)
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15), so utime is
	// the 12th field of the rest.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat %q: %d fields after the name", stat, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<40 { // 350 years: beyond, a Duration overflows
			return 0, fmt.Errorf("proc stat %q: CPU field %q", stat, s)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
