package gpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The nvidia-smi queries. compute_cap exists since driver 510; older
// drivers reject the whole query, and the reduced one is tried instead.
const (
	queryFull    = "--query-gpu=name,compute_cap,driver_version,memory.total"
	queryReduced = "--query-gpu=name,driver_version,memory.total"
	queryFormat  = "--format=csv,noheader,nounits"
)

// maxOutput caps what is kept of one nvidia-smi run; its real output is a
// few hundred bytes per GPU.
const maxOutput = 1 << 20

// SMIError reports a GPU that seems present but cannot be inspected: an
// nvidia-smi that fails while the container has GPU device nodes, hangs
// past the timeout, prints what Probe cannot parse, or is missing while the
// driver is loaded and device nodes exist. Typical causes: the container's
// NVIDIA libraries do not match the host's kernel module ("Driver/library
// version mismatch"), or a GPU in a bad state (nvidia-smi hangs, the
// kernel log shows Xid errors).
type SMIError struct {
	Command  string // the command line run
	ExitCode int    // -1 when it did not exit by itself
	TimedOut bool
	Timeout  time.Duration
	Output   string // first lines of its stdout and stderr
	Err      error  // the underlying error from os/exec
}

func (e *SMIError) Error() string {
	var what string
	switch {
	case e.TimedOut:
		what = fmt.Sprintf("did not finish within %s (NVML hangs on a GPU in a bad state; check the host's kernel log for Xid errors)", e.Timeout)
	case e.ExitCode > 0:
		what = fmt.Sprintf("failed (exit status %d)", e.ExitCode)
		if e.Output != "" {
			what += ": " + e.Output
		}
	default:
		what = e.Output
	}
	hint := "this container has NVIDIA device nodes, so it was given a GPU that cannot be inspected"
	if strings.Contains(e.Output, "version mismatch") {
		hint = "the NVIDIA libraries in the container do not match the host's driver; restart the worker on a healthy host or fix the image"
	}
	return fmt.Sprintf("gpu probe: %s %s; %s (set %s to a facts file to bypass the probe)", e.Command, what, hint, EnvOverride)
}

func (e *SMIError) Unwrap() error { return e.Err }

// Probe runs the full GPU probe (DESIGN.md §2 step 3), only on a fast-path
// miss. With Options.Override set it reads that file instead.
//
// It runs nvidia-smi's CSV query (name, compute capability, driver, memory)
// and then plain nvidia-smi for the "CUDA Version" of its header, each
// bounded by Options.Timeout and killed with its whole process group when
// that passes or ctx ends.
//
// Degraded answers, each explained in Facts.Notes:
//   - a driver too old for the compute_cap field: the reduced query runs,
//     and ComputeCapability is "" (conditions on it do not hold);
//   - no CUDA version in the header (or plain nvidia-smi failed): the CUDA
//     version is derived from the driver version with NVIDIA's table of
//     minimum driver versions, which may be one minor version low.
//
// No GPU is Facts with zero GPUs and a nil error: no nvidia-smi on PATH,
// nvidia-smi failing without any GPU device node (/dev/nvidiaN) present
// (e.g. a CUDA image run on a CPU machine), or "No devices were found".
//
// Errors: an *SMIError when GPU device nodes exist (/dev/nvidiaN, or
// WSL's /dev/dxg) but nvidia-smi fails, or is missing while the driver is
// loaded; when nvidia-smi hangs past the timeout or prints what this
// package cannot parse. Guessing "no GPU" there would record a generation
// for the wrong hardware. Also ctx's error when ctx ends, and a bad
// override file's error.
func Probe(ctx context.Context, o Options) (*Facts, error) {
	if o.Override != "" {
		return LoadOverride(o.Override)
	}
	log := o.logger()
	root := rootOf(o.Root)
	f := &Facts{GPUs: []GPU{}}

	procDriver, err := readProcDriver(o.Root)
	if err != nil {
		f.Notes = append(f.Notes, err.Error())
	}
	if strings.HasPrefix(procDriver, "unparsed-") {
		f.Notes = append(f.Notes, fmt.Sprintf("no driver version found in %s", filepath.Join(root, procVersionPath)))
		procDriver = ""
	}
	// nodes lists the GPU device nodes the container runtime gave this
	// container: proof that a GPU was meant to be usable here.
	nodes := func() []string {
		m, _ := filepath.Glob(filepath.Join(root, devNodesGlob))
		m = gpuNodes(m)
		if dxg := filepath.Join(root, devDXGPath); exists(dxg) {
			m = append(m, dxg)
		}
		return m
	}

	smi, err := exec.LookPath(o.smi())
	if err != nil {
		if n := nodes(); len(n) > 0 && procDriver != "" {
			return nil, &SMIError{Command: o.smi(), ExitCode: -1, Err: err,
				Output: fmt.Sprintf("is not on PATH, but the NVIDIA driver %s is loaded and %s exists (the container runtime mounts nvidia-smi when NVIDIA_DRIVER_CAPABILITIES includes utility)", procDriver, n[0])}
		}
		f.Source = "none"
		f.Driver = procDriver
		f.Notes = append(f.Notes, fmt.Sprintf("%s not found on PATH: no NVIDIA GPU can be used", o.smi()))
		return f, nil
	}
	f.Source = "nvidia-smi"

	withCC, query := true, queryFull
	out, runErr := run(ctx, o, log, smi, query, queryFormat)
	if runErr != nil && !isTimeout(runErr) && ctx.Err() == nil && mentionsComputeCap(runErr) {
		withCC, query = false, queryReduced
		out, runErr = run(ctx, o, log, smi, query, queryFormat)
		if runErr == nil {
			f.Notes = append(f.Notes, "compute capability unknown: this driver's nvidia-smi has no compute_cap field (needs driver >= 510)")
		}
	}
	if runErr != nil {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("gpu probe: %w", err)
		}
		var se *SMIError
		if !errors.As(runErr, &se) {
			return nil, fmt.Errorf("gpu probe: %w", runErr)
		}
		if strings.Contains(se.Output, "No devices were found") {
			f.Driver = procDriver
			f.Notes = append(f.Notes, "nvidia-smi: No devices were found")
			return f, nil
		}
		if se.TimedOut || len(nodes()) > 0 {
			return nil, se
		}
		f.Driver = procDriver
		f.Notes = append(f.Notes, fmt.Sprintf("nvidia-smi failed and no GPU device node exists, so no NVIDIA GPU: %s", se.Output))
		return f, nil
	}

	gpus, drivers, err := parseQuery(out, withCC)
	if err != nil {
		return nil, &SMIError{Command: commandLine(smi, query, queryFormat), Err: err, Output: "printed output this probe cannot parse: " + err.Error()}
	}
	f.GPUs = gpus
	if len(drivers) > 0 {
		f.Driver = drivers[0]
		for _, d := range drivers[1:] {
			if d != f.Driver {
				f.Notes = append(f.Notes, fmt.Sprintf("nvidia-smi reports driver versions %s and %s for different GPUs; using %s", f.Driver, d, f.Driver))
				break
			}
		}
	}

	head, err := run(ctx, o, log, smi)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("gpu probe: %w", ctx.Err())
	}
	var headDriver string
	if err == nil {
		headDriver, f.CUDA = parseHeader(head)
	}
	if f.Driver == "" {
		f.Driver = headDriver
	}
	if f.Driver == "" {
		f.Driver = procDriver
	}
	if f.CUDA == "" && f.Driver != "" {
		why := "its header has no CUDA Version"
		if err != nil {
			why = "it failed: " + err.Error()
		}
		if cuda, ok := cudaForDriver(f.Driver); ok {
			f.CUDA = cuda
			f.Notes = append(f.Notes, fmt.Sprintf("CUDA version %s derived from driver %s (plain nvidia-smi: %s)", cuda, f.Driver, why))
		} else {
			f.Notes = append(f.Notes, fmt.Sprintf("CUDA version unknown: driver %s is older than CUDA 9.0 and plain nvidia-smi: %s", f.Driver, why))
		}
	}
	log.Debug("gpu probe", zap.Stringer("facts", f), zap.Strings("notes", f.Notes))
	return f, nil
}

func mentionsComputeCap(err error) bool {
	var se *SMIError
	if !errors.As(err, &se) {
		return false
	}
	return strings.Contains(se.Output, "compute_cap") || strings.Contains(se.Output, "not a valid field")
}

func isTimeout(err error) bool {
	var se *SMIError
	return errors.As(err, &se) && se.TimedOut
}

func commandLine(path string, args ...string) string {
	return strings.Join(append([]string{filepath.Base(path)}, args...), " ")
}

// run starts path with args in its own process group, bounded by the
// timeout, and returns its stdout. The process group is killed on timeout
// or cancellation so that children (a shell script's sleep, a hung helper)
// neither outlive the probe nor hold its pipes open; WaitDelay bounds the
// wait for pipes a stray grandchild in another group might still hold.
// Failures are *SMIError, except when ctx ends first.
func run(ctx context.Context, o Options, log *zap.Logger, path string, args ...string) ([]byte, error) {
	timeout := o.timeout()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The child is the leader of its own group: kill all of it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	var stdout, stderr cappedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	log.Debug("nvidia-smi", zap.String("command", commandLine(path, args...)), zap.Duration("took", time.Since(start)), zap.Error(err))
	if err == nil {
		return stdout.Bytes(), nil
	}
	se := &SMIError{Command: commandLine(path, args...), ExitCode: -1, Err: err,
		Output: firstLines(append(append(stdout.Bytes(), '\n'), stderr.Bytes()...), 3)}
	if cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		se.TimedOut, se.Timeout = true, timeout
		return nil, se
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		se.ExitCode = ee.ExitCode()
	} else if se.Output == "" {
		se.Output = err.Error() // did not start: permission, bad interpreter line
	}
	return nil, se
}

// cappedBuffer keeps the first maxOutput bytes written and discards the
// rest, so a misbehaving program cannot exhaust memory.
type cappedBuffer struct{ bytes.Buffer }

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// firstLines returns up to n non-empty trimmed lines joined by "; ".
func firstLines(b []byte, n int) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, truncate(l, 200))
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// notAvailable reports nvidia-smi's placeholders for a value it cannot
// give: "[N/A]", "[Not Supported]", "[Unknown Error]", "N/A".
func notAvailable(s string) bool {
	return s == "N/A" || (strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"))
}

// parseQuery parses the CSV of queryFull (withCC) or queryReduced: one line
// per GPU, "name, compute_cap, driver_version, memory.total". Fields are
// split from the right, so a comma inside a name cannot shift the others.
// It returns the GPUs and each line's driver version.
func parseQuery(out []byte, withCC bool) ([]GPU, []string, error) {
	n := 3
	if withCC {
		n = 4
	}
	gpus := []GPU{}
	var drivers []string
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("nvidia-smi query output line %d %q: %s", i+1, truncate(line, 120), fmt.Sprintf(format, args...))
		}
		fields := strings.Split(line, ",")
		if len(fields) < n {
			return nil, nil, bad("want %d comma-separated fields, got %d", n, len(fields))
		}
		k := len(fields) - (n - 1)
		name := strings.TrimSpace(strings.Join(fields[:k], ","))
		rest := fields[k:]
		for j := range rest {
			rest[j] = strings.TrimSpace(rest[j])
		}
		if name == "" || notAvailable(name) || strings.ContainsFunc(name, isControl) {
			return nil, nil, bad("no GPU name")
		}
		g := GPU{Name: name}
		if withCC {
			cc := rest[0]
			rest = rest[1:]
			switch {
			case notAvailable(cc):
			case isMajorMinor(cc):
				g.ComputeCapability = cc
			default:
				return nil, nil, bad("compute capability %q is not like 8.0", cc)
			}
		}
		if !isDriverVersion(rest[0]) {
			return nil, nil, bad("driver version %q is not like 570.86.15", rest[0])
		}
		drivers = append(drivers, rest[0])
		if mem := rest[1]; !notAvailable(mem) {
			v, err := strconv.ParseInt(mem, 10, 64)
			if err != nil || v < 0 {
				return nil, nil, bad("memory %q is not a number of MiB", mem)
			}
			g.MemoryMiB = v
		}
		gpus = append(gpus, g)
	}
	return gpus, drivers, nil
}

var (
	headerDriverRE = regexp.MustCompile(`Driver Version:\s*([0-9][0-9.]*)`)
	headerCUDARE   = regexp.MustCompile(`CUDA Version:\s*([0-9][0-9.]*)`)
)

// parseHeader finds "Driver Version: 570.86.15" and "CUDA Version: 12.8"
// in plain nvidia-smi output; each is "" when absent or malformed ("N/A").
func parseHeader(out []byte) (driver, cuda string) {
	if m := headerDriverRE.FindSubmatch(out); m != nil && isDriverVersion(string(m[1])) {
		driver = string(m[1])
	}
	if m := headerCUDARE.FindSubmatch(out); m != nil && isMajorMinor(string(m[1])) {
		cuda = string(m[1])
	}
	return driver, cuda
}

// cudaByDriver lists, newest first, the minimum Linux driver of each CUDA
// release (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and
// Corresponding Driver Versions", GA releases). A driver supports the
// newest CUDA whose minimum it meets. Branches between releases (565
// reports 12.7) come out one minor version low, which only ever makes a
// `cuda >=` condition stricter.
var cudaByDriver = []struct{ driver, cuda string }{
	{"580.65.06", "13.0"},
	{"575.51.03", "12.9"},
	{"570.26", "12.8"},
	{"560.28.03", "12.6"},
	{"555.42.02", "12.5"},
	{"550.54.14", "12.4"},
	{"545.23.06", "12.3"},
	{"535.54.03", "12.2"},
	{"530.30.02", "12.1"},
	{"525.60.13", "12.0"},
	{"520.61.05", "11.8"},
	{"515.43.04", "11.7"},
	{"510.39.01", "11.6"},
	{"495.29.05", "11.5"},
	{"470.42.01", "11.4"},
	{"465.19.01", "11.3"},
	{"460.27.03", "11.2"},
	{"455.23", "11.1"},
	{"450.51.05", "11.0"},
	{"440.33", "10.2"},
	{"418.39", "10.1"},
	{"410.48", "10.0"},
	{"396.26", "9.2"},
	{"390.46", "9.1"},
	{"384.81", "9.0"},
}

// cudaForDriver returns the CUDA version driver supports per cudaByDriver.
func cudaForDriver(driver string) (string, bool) {
	v, err := coerce(driver)
	if err != nil {
		return "", false
	}
	for _, e := range cudaByDriver {
		min, _ := coerce(e.driver)
		if !v.LessThan(min) {
			return e.cuda, true
		}
	}
	return "", false
}
