// Package pep425 implements PEP 425 compatibility tags and PEP 427 wheel
// filenames: parsing compressed tag sets, parsing wheel filenames, listing
// the tags an interpreter supports in priority order, and ranking a wheel's
// tags against that list.
//
// CompatibleTags reproduces packaging.tags.sys_tags() of packaging 21.3 (the
// version pip 23.2.1 vendors, and what the machine's pip uses) from facts an
// interpreter probe collects, so volboot picks the wheel pip would pick.
//
// Deliberate differences from packaging:
//   - Only Linux platforms are expanded (manylinux, musllinux, linux_*); any
//     other platform tag is used as given (volboot runs in Linux containers).
//   - manylinux compatibility is decided from the reported libc alone: no
//     `_manylinux` override module is consulted, and i686/armv7l are assumed
//     to have a compatible ABI (packaging inspects the running binary).
//   - A free-threaded CPython (ABI tag ending in "t", such as "cp313t") gets
//     no abi3 tags, as packaging 24+ does; 21.3 predates free threading.
//   - Tags are restricted to ASCII letters, digits and "_" in each
//     component, and lowercased (as packaging's Tag lowercases).
//   - Like 21.3, CPython gets no "cpXY-none-any" tag (later packaging
//     versions list one before the pyXY-none-any tags); wheels with that
//     tag are vanishingly rare, and agreeing with the pip that is installed
//     matters more.
//
// Values are immutable after construction and safe for concurrent use.
package pep425

import (
	"fmt"
	"strings"
)

// Tag is one (interpreter, ABI, platform) triple, lowercase.
type Tag struct{ Interpreter, ABI, Platform string }

// String returns "interpreter-abi-platform".
func (t Tag) String() string { return t.Interpreter + "-" + t.ABI + "-" + t.Platform }

// ParseTags parses a tag triple whose parts may be compressed sets joined
// by ".", and expands it: "py2.py3-none-any" is two tags. The order is
// interpreter-major, then ABI, then platform; duplicates are dropped.
func ParseTags(s string) ([]Tag, error) {
	parts := strings.Split(s, "-")
	if len(parts) != 3 {
		return nil, fmt.Errorf("invalid tag set %q: expected interpreter-abi-platform", s)
	}
	var sets [3][]string
	for i, part := range parts {
		for _, c := range strings.Split(part, ".") {
			if !validTagComponent(c) {
				return nil, fmt.Errorf("invalid tag set %q: component %q must be non-empty letters, digits and _", s, c)
			}
			sets[i] = append(sets[i], strings.ToLower(c))
		}
	}
	seen := map[Tag]bool{}
	var tags []Tag
	for _, in := range sets[0] {
		for _, abi := range sets[1] {
			for _, pl := range sets[2] {
				t := Tag{in, abi, pl}
				if !seen[t] {
					seen[t] = true
					tags = append(tags, t)
				}
			}
		}
	}
	return tags, nil
}

func validTagComponent(c string) bool {
	if c == "" {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// Ranking answers "how good is this wheel for this interpreter" from an
// ordered list of supported tags.
type Ranking struct {
	index map[Tag]int
}

// NewRanking builds a Ranking from supported tags ordered best first (as
// CompatibleTags returns them). A tag listed twice keeps its best position.
func NewRanking(supported []Tag) Ranking {
	idx := make(map[Tag]int, len(supported))
	for i, t := range supported {
		if _, ok := idx[t]; !ok {
			idx[t] = i
		}
	}
	return Ranking{index: idx}
}

// Rank returns the position of the best of tags in the supported list
// (lower is better), and ok=false when none of them is supported.
func (r Ranking) Rank(tags []Tag) (rank int, ok bool) {
	best := -1
	for _, t := range tags {
		if i, found := r.index[t]; found && (best < 0 || i < best) {
			best = i
		}
	}
	if best < 0 {
		return 0, false
	}
	return best, true
}

// Interpreter holds the facts an interpreter probe collects.
type Interpreter struct {
	Implementation       string // sys.implementation.name: "cpython", "pypy"
	Major, Minor         int    // sys.version_info
	ABI                  string // the interpreter's own ABI tag: "cp311", "cp313t", "pypy310_pp73"
	Platform             string // sysconfig.get_platform() as a tag: "linux_x86_64"
	Machine              string // platform.machine(): "x86_64"; used when Platform is empty
	Libc                 string // "glibc", "musl" or "" (unknown, not Linux)
	LibcMajor, LibcMinor int
	// Is32Bit is sys.maxsize <= 2**32: a 32-bit interpreter on a 64-bit
	// kernel reports linux-x86_64 / linux-aarch64 but needs i686 / armv7l
	// wheels, which packaging corrects for, and so do we.
	Is32Bit bool
}

var shortNames = map[string]string{
	"python": "py", "cpython": "cp", "pypy": "pp", "ironpython": "ip", "jython": "jy",
}

// CompatibleTags lists the tags the interpreter supports, best first, in
// the order of packaging 21.3's sys_tags(): interpreter-specific tags for
// each platform, then abi3 and none, older abi3 versions, then the generic
// pyXY tags, and finally the "any" platform.
func CompatibleTags(in Interpreter) []Tag {
	name := strings.ToLower(in.Implementation)
	short, ok := shortNames[name]
	if !ok {
		short = name
	}
	nodot := func(major, minor int) string { return fmt.Sprintf("%d%d", major, minor) }
	platforms := platformTags(in)
	var tags []Tag
	add := func(in, abi string, pls ...string) {
		for _, p := range pls {
			tags = append(tags, Tag{strings.ToLower(in), strings.ToLower(abi), strings.ToLower(p)})
		}
	}

	if short == "cp" {
		interp := "cp" + nodot(in.Major, in.Minor)
		var abis []string
		if abi := strings.ToLower(in.ABI); abi != "" && abi != "abi3" && abi != "none" {
			abis = append(abis, abi)
			// A debug build (cp38d and later) also loads the plain ABI's extensions.
			if strings.HasSuffix(abi, "d") && (in.Major > 3 || in.Major == 3 && in.Minor >= 8) {
				abis = append(abis, interp)
			}
		}
		for _, abi := range abis {
			add(interp, abi, platforms...)
		}
		abi3 := (in.Major > 3 || in.Major == 3 && in.Minor >= 2) && !strings.HasSuffix(strings.ToLower(in.ABI), "t")
		if abi3 {
			add(interp, "abi3", platforms...)
		}
		add(interp, "none", platforms...)
		if abi3 {
			for minor := in.Minor - 1; minor > 1; minor-- {
				add("cp"+nodot(in.Major, minor), "abi3", platforms...)
			}
		}
	} else {
		interp := short + nodot(in.Major, in.Minor)
		var abis []string
		if in.ABI != "" {
			abis = append(abis, strings.NewReplacer(".", "_", "-", "_").Replace(in.ABI))
		}
		if !contains(abis, "none") {
			abis = append(abis, "none")
		}
		for _, abi := range abis {
			add(interp, abi, platforms...)
		}
	}

	pyRange := []string{"py" + nodot(in.Major, in.Minor), fmt.Sprintf("py%d", in.Major)}
	for minor := in.Minor - 1; minor >= 0; minor-- {
		pyRange = append(pyRange, "py"+nodot(in.Major, minor))
	}
	for _, py := range pyRange {
		add(py, "none", platforms...)
	}
	if short == "pp" {
		add("pp3", "none", "any")
	}
	for _, py := range pyRange {
		add(py, "none", "any")
	}
	return tags
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// legacyManylinux names the glibc versions that have an older alias.
var legacyManylinux = map[[2]int]string{
	{2, 17}: "manylinux2014",
	{2, 12}: "manylinux2010",
	{2, 5}:  "manylinux1",
}

// platformTags lists the platform tags for the interpreter, best first.
func platformTags(in Interpreter) []string {
	plat := in.Platform
	if plat == "" && in.Machine != "" {
		plat = "linux_" + in.Machine
	}
	plat = strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToLower(plat))
	if in.Is32Bit {
		switch plat {
		case "linux_x86_64":
			plat = "linux_i686"
		case "linux_aarch64":
			plat = "linux_armv7l"
		}
	}
	arch, isLinux := strings.CutPrefix(plat, "linux_")
	if !isLinux {
		return []string{plat}
	}
	var out []string
	switch in.Libc {
	case "glibc":
		out = manylinuxTags(arch, in.LibcMajor, in.LibcMinor)
	case "musl":
		for minor := in.LibcMinor; minor >= 0; minor-- {
			out = append(out, fmt.Sprintf("musllinux_%d_%d_%s", in.LibcMajor, minor, arch))
		}
	}
	return append(out, plat)
}

// manylinuxTags follows packaging's _manylinux.platform_tags: every glibc
// version from the running one down to the oldest the architecture ever
// had manylinux wheels for (2.5 on x86, 2.17 elsewhere), each followed by
// its legacy alias when it has one.
func manylinuxTags(arch string, major, minor int) []string {
	switch arch {
	case "x86_64", "i686", "aarch64", "ppc64", "ppc64le", "s390x", "armv7l":
	default:
		return nil
	}
	if major < 2 {
		return nil // not a glibc anyone built manylinux wheels for
	}
	tooOld := [2]int{2, 16}
	if arch == "x86_64" || arch == "i686" {
		tooOld = [2]int{2, 4}
	}
	maxes := [][2]int{{major, minor}}
	for m := major - 1; m > 1; m-- {
		maxes = append(maxes, [2]int{m, 50}) // packaging's guess for a past major's last minor
	}
	var out []string
	for _, mx := range maxes {
		floor := -1
		if mx[0] == tooOld[0] {
			floor = tooOld[1]
		}
		for m := mx[1]; m > floor; m-- {
			out = append(out, fmt.Sprintf("manylinux_%d_%d_%s", mx[0], m, arch))
			if legacy, ok := legacyManylinux[[2]int{mx[0], m}]; ok {
				out = append(out, legacy+"_"+arch)
			}
		}
	}
	return out
}
