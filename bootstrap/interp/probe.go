// Package interp probes a Python interpreter once (DESIGN.md §2 step 3):
// its version, implementation, ABI, libc, the venv scheme's install paths
// and, through pep425, the ordered list of wheel tags it accepts.
//
// Probing runs the interpreter with an embedded script in isolated mode
// (-I -S: no user site, no site-packages, no PYTHON* environment), so what a
// venv built from it will see is what the probe reports. Results are cached
// as small JSON files keyed by the interpreter's path, size and mtime: an
// image update that replaces the interpreter invalidates the cache by
// itself.
//
// Probe is safe for concurrent use; two callers racing on one cache file
// each write complete JSON atomically and the last rename wins.
package interp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pep425"
)

// Schema is the version of Info's JSON; a cached file of another schema is
// ignored and probed again.
const Schema = 1

// Info is what a probe learns about an interpreter.
type Info struct {
	Schema int `json:"schema"`
	// Path is the interpreter as the caller named it; Size and MTime are
	// its fingerprint (stat follows symlinks).
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`

	Executable     string `json:"executable"`      // sys.executable
	BaseExecutable string `json:"base_executable"` // what a venv's bin/python links to
	Implementation string `json:"implementation"`  // sys.implementation.name: cpython, pypy
	Version        string `json:"version"`         // platform.python_version(): 3.11.7
	Major          int    `json:"major"`
	Minor          int    `json:"minor"`
	Micro          int    `json:"micro"`
	ReleaseLevel   string `json:"releaselevel"` // final, candidate, ...
	Serial         int    `json:"serial"`
	CacheTag       string `json:"cache_tag"`  // cpython-311
	SOABI          string `json:"soabi"`      // cpython-311-x86_64-linux-gnu
	ExtSuffix      string `json:"ext_suffix"` // .cpython-311-x86_64-linux-gnu.so
	ABIFlags       string `json:"abiflags"`
	Prefix         string `json:"prefix"`
	BasePrefix     string `json:"base_prefix"`
	ExecPrefix     string `json:"exec_prefix"`
	BaseExecPrefix string `json:"base_exec_prefix"`
	Platlibdir     string `json:"platlibdir"`
	Include        string `json:"include"` // the interpreter's own C headers
	// Lib64 says whether `python -m venv` makes lib64 -> lib here.
	Lib64    bool   `json:"lib64"`
	Platform string `json:"platform"` // sysconfig.get_platform(): linux-x86_64
	Machine  string `json:"machine"`  // x86_64, aarch64
	Bits     int    `json:"bits"`
	// Libc is "glibc", "musl" or "" (unknown); version numbers are zero
	// when unknown.
	Libc      string `json:"libc"`
	LibcMajor int    `json:"libc_major"`
	LibcMinor int    `json:"libc_minor"`
	// VenvScheme is the sysconfig scheme a venv uses (venv or
	// posix_prefix) and VenvPaths its paths relative to the venv root:
	// purelib, platlib, scripts, include, data, ...
	VenvScheme string            `json:"venv_scheme"`
	VenvPaths  map[string]string `json:"venv_paths"`
}

// probeScript prints the facts as JSON. It must run on every Python 3 a
// manifest may ask for, so it uses nothing newer than 3.8.
const probeScript = `
import sys, os, sysconfig, platform, json
base = "/__volboot_venv__"
names = sysconfig.get_scheme_names()
scheme = "venv" if "venv" in names else "posix_prefix"
vars = {"base": base, "platbase": base, "installed_base": base, "installed_platbase": base, "userbase": base}
paths = sysconfig.get_paths(scheme, vars=vars, expand=True)
rel = {}
for k, v in paths.items():
    if v == base or v.startswith(base + "/"):
        rel[k] = v[len(base) + 1:]
try:
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (ValueError, OSError, AttributeError):
    glibc = ""
vi = sys.version_info
out = {
  "executable": sys.executable,
  "base_executable": getattr(sys, "_base_executable", sys.executable),
  "implementation": sys.implementation.name,
  "version": platform.python_version(),
  "major": vi.major, "minor": vi.minor, "micro": vi.micro,
  "releaselevel": vi.releaselevel, "serial": vi.serial,
  "cache_tag": sys.implementation.cache_tag or "",
  "soabi": sysconfig.get_config_var("SOABI") or "",
  "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or "",
  "abiflags": getattr(sys, "abiflags", ""),
  "prefix": sys.prefix, "base_prefix": sys.base_prefix,
  "exec_prefix": sys.exec_prefix, "base_exec_prefix": sys.base_exec_prefix,
  "platlibdir": getattr(sys, "platlibdir", "lib"),
  "include": sysconfig.get_path("include") or "",
  "lib64": sys.maxsize > 2**32 and os.name == "posix" and sys.platform != "darwin",
  "platform": sysconfig.get_platform(),
  "bits": 64 if sys.maxsize > 2**32 else 32,
  "glibc": glibc,
  "venv_scheme": scheme,
  "venv_paths": rel,
}
sys.stdout.write(json.dumps(out))
`

// Cache is where probe results are kept, keyed by the interpreter's path,
// size and mtime. The zero Cache keeps nothing.
type Cache struct {
	Dir string
	// Write stores a fresh result. Readers that must change nothing
	// (status, on a volume they may not write) leave it false.
	Write bool
}

// Probe returns facts about python (a path, or a name looked up in PATH).
// A result cached for the same path, size and mtime is returned without
// running anything; a fresh one is cached when cache.Write is set. A cache
// that cannot be written costs a warning, never the probe. Errors name the
// interpreter and include the end of its stderr.
func Probe(ctx context.Context, python string, cache Cache, logger *zap.Logger) (*Info, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	exe := python
	if !strings.Contains(python, "/") {
		p, err := exec.LookPath(python)
		if err != nil {
			return nil, fmt.Errorf("interpreter %q: %w (set --python or VOLBOOT_PYTHON)", python, err)
		}
		exe = p
	}
	abs, err := filepath.Abs(exe)
	if err != nil {
		return nil, fmt.Errorf("interpreter %s: %w", exe, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("interpreter %s: %w", abs, err)
	}
	var cacheFile string
	cacheDir := cache.Dir
	if cacheDir != "" {
		h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00%d", abs, st.Size(), st.ModTime().UnixNano(), Schema))
		cacheFile = filepath.Join(cacheDir, "interp-"+hex.EncodeToString(h[:12])+".json")
		if b, err := os.ReadFile(cacheFile); err == nil {
			var info Info
			if json.Unmarshal(b, &info) == nil && info.Schema == Schema && info.Path == abs &&
				info.Size == st.Size() && info.MTime.Equal(st.ModTime()) {
				return &info, nil
			}
		}
	}

	cmd := exec.CommandContext(ctx, abs, "-I", "-S", "-c", probeScript)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("probe interpreter %s: %w: %s", abs, err, tail(stderr.String()))
	}
	var raw struct {
		Info
		Glibc string `json:"glibc"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		return nil, fmt.Errorf("probe interpreter %s: output is not the expected JSON (%v): %s", abs, err, tail(stdout.String()+stderr.String()))
	}
	info := raw.Info
	info.Schema, info.Path, info.Size, info.MTime = Schema, abs, st.Size(), st.ModTime()
	if _, m, ok := strings.Cut(info.Platform, "-"); ok {
		info.Machine = m
	}
	if info.Bits == 32 && info.Machine == "x86_64" { // 32-bit userland on a 64-bit kernel
		info.Machine = "i686"
	}
	if info.Major != 3 || info.Minor < 6 {
		return nil, fmt.Errorf("probe interpreter %s: Python %s is not supported (need 3.6 or newer)", abs, info.Version)
	}
	if info.VenvPaths["purelib"] == "" || info.VenvPaths["scripts"] == "" {
		return nil, fmt.Errorf("probe interpreter %s: the %s scheme has no relative purelib/scripts paths: %v", abs, info.VenvScheme, info.VenvPaths)
	}
	if g, ok := strings.CutPrefix(raw.Glibc, "glibc "); ok {
		info.Libc = "glibc"
		info.LibcMajor, info.LibcMinor = parseMajorMinor(g)
	} else if strings.HasPrefix(info.Platform, "linux") {
		info.Libc, info.LibcMajor, info.LibcMinor = muslVersion(ctx, info.Executable)
	}
	logger.Debug("probed interpreter", zap.String("python", abs), zap.String("version", info.Version),
		zap.String("libc", info.Libc), zap.Duration("took", time.Since(start)))
	if cacheFile != "" && cache.Write {
		b, _ := json.MarshalIndent(&info, "", "  ")
		err := os.MkdirAll(cacheDir, 0o755)
		if err == nil {
			err = atomicfile.Write(cacheFile, b, 0o644)
		}
		if err != nil {
			logger.Warn("could not cache the interpreter's facts; the next boot probes it again", zap.String("cache", cacheDir), zap.Error(err))
		}
	}
	return &info, nil
}

var majorMinorRE = regexp.MustCompile(`^(\d+)\.(\d+)`)

func parseMajorMinor(s string) (int, int) {
	m := majorMinorRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, 0
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	return a, b
}

var muslVersionRE = regexp.MustCompile(`(?m)^Version (\d+)\.(\d+)`)

// muslVersion recognises a musl interpreter by its ELF program interpreter
// (ld-musl-*.so.1) and asks that loader for its version, which it prints
// when run without arguments (the way packaging's _musllinux does).
func muslVersion(ctx context.Context, exe string) (string, int, int) {
	f, err := elf.Open(exe)
	if err != nil {
		return "", 0, 0
	}
	defer f.Close()
	var ld string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err == nil {
				ld = strings.TrimRight(string(b), "\x00")
			}
		}
	}
	if !strings.Contains(ld, "musl") {
		return "", 0, 0
	}
	out, _ := exec.CommandContext(ctx, ld).CombinedOutput() // exits 1 by design
	m := muslVersionRE.FindSubmatch(out)
	if m == nil {
		return "musl", 0, 0
	}
	a, _ := strconv.Atoi(string(m[1]))
	b, _ := strconv.Atoi(string(m[2]))
	return "musl", a, b
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// ImplementationTag is the PEP 425 implementation abbreviation: cp, pp, ...
func (i *Info) ImplementationTag() string {
	switch i.Implementation {
	case "cpython":
		return "cp"
	case "pypy":
		return "pp"
	case "ironpython":
		return "ip"
	case "jython":
		return "jy"
	}
	return i.Implementation
}

// ABI is the interpreter's PEP 425 ABI tag: cp311, cp313t, pypy39_pp73.
func (i *Info) ABI() string {
	if i.SOABI == "" {
		return "none"
	}
	parts := strings.Split(i.SOABI, "-")
	if i.Implementation == "cpython" && len(parts) >= 2 && parts[0] == "cpython" {
		return "cp" + parts[1]
	}
	if i.Implementation == "pypy" && len(parts) >= 2 {
		return strings.ReplaceAll(parts[0]+"_"+parts[1], ".", "_")
	}
	return strings.NewReplacer("-", "_", ".", "_").Replace(i.SOABI)
}

// PyVersion is "X.Y".
func (i *Info) PyVersion() string { return fmt.Sprintf("%d.%d", i.Major, i.Minor) }

// Interpreter is the pep425 view of the interpreter.
func (i *Info) Interpreter() pep425.Interpreter {
	return pep425.Interpreter{
		Implementation: i.Implementation,
		Major:          i.Major,
		Minor:          i.Minor,
		ABI:            i.ABI(),
		Platform:       strings.NewReplacer("-", "_", ".", "_").Replace(i.Platform),
		Machine:        i.Machine,
		Libc:           i.Libc,
		LibcMajor:      i.LibcMajor,
		LibcMinor:      i.LibcMinor,
		// A 32-bit interpreter on a 64-bit kernel takes i686/armv7l
		// wheels, as packaging decides.
		Is32Bit: i.Bits == 32,
	}
}

// Tags returns the wheel tags this interpreter accepts, best first.
func (i *Info) Tags() []pep425.Tag { return pep425.CompatibleTags(i.Interpreter()) }

// Identity is a stable string naming what about the interpreter determines
// a generation's content: implementation, exact version, ABI, platform and
// the base executable's path.
func (i *Info) Identity() string {
	return strings.Join([]string{i.Implementation, i.Version, i.ABI(), i.Platform, i.Libc,
		strconv.Itoa(i.LibcMajor) + "." + strconv.Itoa(i.LibcMinor), i.BaseExecutable}, "|")
}
