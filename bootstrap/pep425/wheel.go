package pep425

import (
	"fmt"
	"strings"

	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
)

// WheelName is a parsed PEP 427 wheel filename:
// {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
type WheelName struct {
	Distribution string // as written in the filename
	Version      string // as written
	Build        string // "" or the build tag ("1", "2abc")
	Tags         []Tag
}

// ParseWheelFilename parses a wheel's base filename. It refuses a name
// without ".whl", with other than 4 or 5 dashes, a distribution part that is
// not escaped per PEP 427 (only letters, digits, "_" and ".", no "__"), a
// version that is not PEP 440, a build tag that does not start with a
// digit, or a bad tag set. Errors name the file.
func ParseWheelFilename(filename string) (WheelName, error) {
	fail := func(format string, args ...any) (WheelName, error) {
		return WheelName{}, fmt.Errorf("wheel filename %q: %s", filename, fmt.Sprintf(format, args...))
	}
	if strings.ContainsAny(filename, `/\`) {
		return fail("expected a base name, not a path")
	}
	stem, ok := strings.CutSuffix(filename, ".whl")
	if !ok {
		return fail("does not end in .whl")
	}
	parts := strings.Split(stem, "-")
	if len(parts) != 5 && len(parts) != 6 {
		return fail("expected name-version[-build]-python-abi-platform.whl (4 or 5 dashes), found %d dashes", len(parts)-1)
	}
	w := WheelName{Distribution: parts[0], Version: parts[1]}
	if w.Distribution == "" || strings.Contains(w.Distribution, "__") || !escapedName(w.Distribution) {
		return fail("distribution %q is not an escaped project name (letters, digits, single _ and .)", w.Distribution)
	}
	if _, err := pep440.Parse(w.Version); err != nil {
		return fail("%v", err)
	}
	if len(parts) == 6 {
		w.Build = parts[2]
		if w.Build == "" || w.Build[0] < '0' || w.Build[0] > '9' || !escapedName(w.Build) {
			return fail("build tag %q must start with a digit and hold only letters, digits, _ and .", w.Build)
		}
	}
	tags, err := ParseTags(strings.Join(parts[len(parts)-3:], "-"))
	if err != nil {
		return fail("%v", err)
	}
	w.Tags = tags
	return w, nil
}

func escapedName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// NormalizedName is the PEP 503 normalized distribution name.
func (w WheelName) NormalizedName() string { return pep508.NormalizeName(w.Distribution) }

// ParsedVersion returns the version, parsed (ParseWheelFilename checked it).
func (w WheelName) ParsedVersion() pep440.Version {
	v, _ := pep440.Parse(w.Version)
	return v
}

// BuildNumber splits the build tag into its leading number and the rest,
// which is how PEP 427 orders builds of one version ("" sorts first).
func (w WheelName) BuildNumber() (number string, rest string) {
	i := 0
	for i < len(w.Build) && w.Build[i] >= '0' && w.Build[i] <= '9' {
		i++
	}
	return w.Build[:i], w.Build[i:]
}

// String returns the filename, with the tag set written out in full
// (compressed sets are listed component by component in first-seen order).
func (w WheelName) String() string {
	var interp, abi, plat []string
	for _, t := range w.Tags {
		interp = appendUnique(interp, t.Interpreter)
		abi = appendUnique(abi, t.ABI)
		plat = appendUnique(plat, t.Platform)
	}
	s := w.Distribution + "-" + w.Version
	if w.Build != "" {
		s += "-" + w.Build
	}
	return s + "-" + strings.Join(interp, ".") + "-" + strings.Join(abi, ".") + "-" + strings.Join(plat, ".") + ".whl"
}

func appendUnique(list []string, s string) []string {
	if contains(list, s) {
		return list
	}
	return append(list, s)
}
