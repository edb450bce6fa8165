package lockfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// LocalIdentity describes the calling process. Parts that cannot be read
// (no /proc) stay empty, which only disables the same-host dead-pid rule.
func LocalIdentity() Identity {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	id := Identity{Host: host, PID: os.Getpid()}
	if st, err := readProcStat("self"); err == nil {
		id.PIDStart = st.start
	}
	if ns, err := os.Readlink("/proc/self/ns/pid"); err == nil {
		id.PIDNamespace = ns
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		id.BootID = strings.TrimSpace(string(b))
	}
	return id
}

// fillIdentity completes id with the local values of fields left zero.
// Tests set Host (and BootID) to play a process on another machine.
func fillIdentity(id Identity) Identity {
	local := LocalIdentity()
	if id.Host == "" {
		id.Host = local.Host
	}
	if id.PID == 0 {
		id.PID = local.PID
		if id.PIDStart == 0 {
			id.PIDStart = local.PIDStart
		}
	}
	if id.PIDNamespace == "" {
		id.PIDNamespace = local.PIDNamespace
	}
	if id.BootID == "" {
		id.BootID = local.BootID
	}
	return id
}

// sameMachine reports whether a pid in rec can be checked from here: same
// host name, same kernel boot and same pid namespace. Any empty part means
// we cannot tell, so the answer is no.
//
// Why the namespace test is sound although namespace inode numbers can be
// reused: while the writer's namespace exists, no other namespace can carry
// its number, so an equal number means either our namespace or one that is
// gone, and a process in a namespace that is gone is dead.
func sameMachine(rec, local Identity) bool {
	return rec.Host == local.Host &&
		rec.BootID != "" && rec.BootID == local.BootID &&
		rec.PIDNamespace != "" && rec.PIDNamespace == local.PIDNamespace
}

// processGone reports whether the process named by rec is certainly dead:
// same machine (see sameMachine) and its pid is absent, a zombie, or now
// belongs to a process with another start time. Anything uncertain reports
// false, so a live holder is never declared dead by this rule; the TTL rule
// catches the rest.
func processGone(rec, local Identity) (bool, string) {
	if !sameMachine(rec, local) || rec.PID <= 0 {
		return false, ""
	}
	st, err := readProcStat(strconv.Itoa(rec.PID))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, fmt.Sprintf("process %d no longer exists on this host", rec.PID)
	case err != nil:
		// No usable /proc: signal 0 still tells absent from present, though
		// not a zombie or a reused pid.
		if errors.Is(syscall.Kill(rec.PID, 0), syscall.ESRCH) {
			return true, fmt.Sprintf("process %d no longer exists on this host", rec.PID)
		}
		return false, ""
	case st.state == 'Z' || st.state == 'X':
		return true, fmt.Sprintf("process %d has exited (zombie)", rec.PID)
	case rec.PIDStart != 0 && st.start != rec.PIDStart:
		return true, fmt.Sprintf("pid %d now belongs to another process (start time %d, holder's was %d)", rec.PID, st.start, rec.PIDStart)
	}
	return false, ""
}

type procStat struct {
	state byte
	start uint64
}

// readProcStat reads the state and start time of /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func readProcStat(pid string) (procStat, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state is field 3, starttime field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat: too few fields")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat start time: %w", err)
	}
	return procStat{state: f[0][0], start: start}, nil
}
