package pep440

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Fragments of packaging's specifier grammar (lowercased input). They are
// deliberately a little looser than versionPattern in the number parts,
// exactly as packaging's are; Parse decides the rest.
const (
	specHead  = `v?(?:[0-9]+!)?`
	specPre   = `(?:[-_\.]?(?:alpha|a|beta|b|preview|pre|c|rc)[-_\.]?[0-9]*)?`
	specPost  = `(?:(?:-[0-9]+)|(?:[-_\.]?(?:post|rev|r)[-_\.]?[0-9]*))?`
	specDev   = `(?:[-_\.]?dev[-_\.]?[0-9]*)?`
	specLocal = `(?:\+[a-z0-9]+(?:[-_\.][a-z0-9]+)*)?`
)

var (
	// == and != allow a local segment or a trailing ".*" (not both, and no
	// dev segment before ".*").
	eqSpecRE = regexp.MustCompile(`^` + specHead + `[0-9]+(?:\.[0-9]+)*` + specPre + specPost +
		`(?:` + specDev + specLocal + `|\.\*)?$`)
	// ~= needs at least two release components and allows no local segment.
	compatSpecRE = regexp.MustCompile(`^` + specHead + `[0-9]+(?:\.[0-9]+)+` + specPre + specPost + specDev + `$`)
	// <, <=, >, >= allow neither a local segment nor a wildcard.
	orderSpecRE = regexp.MustCompile(`^` + specHead + `[0-9]+(?:\.[0-9]+)*` + specPre + specPost + specDev + `$`)
)

// operators in the order they must be tried (longest first).
var operators = []string{"===", "~=", "==", "!=", "<=", ">=", "<", ">"}

// Specifier is one clause of a specifier set, such as ">=1.0" or "==2.*".
type Specifier struct {
	Operator string // one of === ~= == != <= >= < >
	Version  string // as written (surrounding whitespace removed), including any ".*"

	v        Version // parsed Version without ".*"; zero for unparseable "==="
	wildcard bool
}

// ParseSpecifier parses a single clause such as "~=1.4.2" or "== 2.8.*".
func ParseSpecifier(s string) (Specifier, error) {
	if !isASCII(s) {
		return Specifier{}, fmt.Errorf("invalid version specifier %q: not ASCII", s)
	}
	t := strings.Trim(s, pySpace)
	var op string
	for _, o := range operators {
		if strings.HasPrefix(t, o) {
			op = o
			break
		}
	}
	if op == "" {
		return Specifier{}, fmt.Errorf("invalid version specifier %q: expected one of ~= == != <= >= < > === before the version", s)
	}
	raw := strings.Trim(t[len(op):], pySpace)
	sp := Specifier{Operator: op, Version: raw}
	if op == "===" {
		if raw == "" || strings.ContainsAny(raw, pySpace) {
			return Specifier{}, fmt.Errorf("invalid version specifier %q: === needs a version without whitespace", s)
		}
		sp.v, _ = Parse(raw) // arbitrary strings are allowed; only the string is compared
		return sp, nil
	}
	low := strings.ToLower(raw)
	var re *regexp.Regexp
	var what string
	switch op {
	case "==", "!=":
		re, what = eqSpecRE, "a version, optionally with a local segment or a trailing .*"
	case "~=":
		re, what = compatSpecRE, "a version with at least two release components and no local segment or wildcard"
	default:
		re, what = orderSpecRE, "a version without a local segment or wildcard"
	}
	if !re.MatchString(low) {
		return Specifier{}, fmt.Errorf("invalid version specifier %q: %s needs %s, found %q", s, op, what, raw)
	}
	if strings.HasSuffix(low, ".*") {
		sp.wildcard = true
		low = strings.TrimSuffix(low, ".*")
	}
	v, err := Parse(low)
	if err != nil {
		return Specifier{}, fmt.Errorf("invalid version specifier %q: %w", s, err)
	}
	sp.v = v
	return sp, nil
}

// String returns the operator followed by the version as written.
func (sp Specifier) String() string { return sp.Operator + sp.Version }

// Prereleases reports whether this clause by itself admits pre-releases
// under packaging's default rule: an inclusive operator (== >= <= ~= ===)
// whose version is itself a pre-release.
func (sp Specifier) Prereleases() bool {
	switch sp.Operator {
	case "==", ">=", "<=", "~=", "===":
		return !sp.v.IsZero() && sp.v.IsPrerelease()
	}
	return false
}

// Match reports whether v satisfies this clause, ignoring the pre-release
// rule (which the set applies).
func (sp Specifier) Match(v Version) bool {
	switch sp.Operator {
	case "===":
		return strings.EqualFold(v.String(), sp.Version)
	case "==":
		return sp.equal(v)
	case "!=":
		return !sp.equal(v)
	case "<=":
		return v.Public().Compare(sp.v) <= 0
	case ">=":
		return v.Public().Compare(sp.v) >= 0
	case "<":
		if v.Compare(sp.v) >= 0 {
			return false
		}
		// <3.1 must not admit 3.1.dev0 unless the spec is itself a pre-release.
		return sp.v.IsPrerelease() || !v.IsPrerelease() || v.base().Compare(sp.v.base()) != 0
	case ">":
		if v.Compare(sp.v) <= 0 {
			return false
		}
		// >3.1 must not admit 3.1.post1 unless the spec is itself a post-release,
		// and never 3.1+local.
		if !sp.v.IsPostrelease() && v.IsPostrelease() && v.base().Compare(sp.v.base()) == 0 {
			return false
		}
		return len(v.local) == 0 || v.base().Compare(sp.v.base()) != 0
	case "~=":
		if v.Public().Compare(sp.v) < 0 {
			return false
		}
		prefix := sp.v.release[:len(sp.v.release)-1]
		p := Version{epoch: sp.v.epoch, release: prefix}
		return prefixMatch(v, p.String())
	}
	return false
}

func (sp Specifier) equal(v Version) bool {
	if sp.wildcard {
		return prefixMatch(v, sp.v.String())
	}
	if len(sp.v.local) == 0 {
		v = v.Public()
	}
	return v.Compare(sp.v) == 0
}

// prefixMatch implements "==prefix.*": both sides in normalized form, split
// at dots with an implicit dot before a pre-release tag, release parts
// zero-padded to the same length, then the prospective version cut to the
// prefix's length.
func prefixMatch(v Version, prefix string) bool {
	spec := versionSplit(prefix)
	pv, _ := padRelease(versionSplit(v.publicString()), spec)
	if len(pv) < len(spec) {
		return false
	}
	for i := range spec {
		if pv[i] != spec[i] {
			return false
		}
	}
	return true
}

var preSplitRE = regexp.MustCompile(`^([0-9]+)((?:a|b|c|rc)[0-9]+)$`)

func versionSplit(s string) []string {
	epoch := "0"
	if i := strings.LastIndexByte(s, '!'); i >= 0 {
		epoch, s = s[:i], s[i+1:]
	}
	out := []string{epoch}
	for _, item := range strings.Split(s, ".") {
		if m := preSplitRE.FindStringSubmatch(item); m != nil {
			out = append(out, m[1], m[2])
		} else {
			out = append(out, item)
		}
	}
	return out
}

// padRelease pads the leading all-digit parts of left with zeros to the
// length of right's.
func padRelease(left, right []string) ([]string, []string) {
	digitsPrefix := func(s []string) int {
		n := 0
		for n < len(s) && isDigits(s[n]) {
			n++
		}
		return n
	}
	nl, nr := digitsPrefix(left), digitsPrefix(right)
	if nl >= nr {
		return left, right
	}
	out := append([]string(nil), left[:nl]...)
	for i := nl; i < nr; i++ {
		out = append(out, "0")
	}
	return append(out, left[nl:]...), right
}

// Specifiers is a comma-separated set of clauses, all of which must hold.
// The zero value is the empty set, which every final release satisfies.
type Specifiers struct {
	specs []Specifier // sorted by String, duplicates removed
}

// ParseSpecifiers parses a comma-separated specifier set such as
// ">=3.11,<3.13". Empty clauses are ignored, as packaging does, so "" is
// the empty set. The error names the input and the bad clause.
func ParseSpecifiers(s string) (Specifiers, error) {
	var set Specifiers
	for _, part := range strings.Split(s, ",") {
		if strings.Trim(part, pySpace) == "" {
			continue
		}
		sp, err := ParseSpecifier(part)
		if err != nil {
			return Specifiers{}, fmt.Errorf("in specifier set %q: %w", s, err)
		}
		set.specs = append(set.specs, sp)
	}
	sort.Slice(set.specs, func(i, j int) bool { return set.specs[i].String() < set.specs[j].String() })
	out := set.specs[:0]
	for i, sp := range set.specs {
		if i == 0 || sp.String() != set.specs[i-1].String() {
			out = append(out, sp)
		}
	}
	set.specs = out
	return set, nil
}

// MustParseSpecifiers is ParseSpecifiers for constants; it panics on error.
func MustParseSpecifiers(s string) Specifiers {
	set, err := ParseSpecifiers(s)
	if err != nil {
		panic(err)
	}
	return set
}

// Clauses returns the clauses of the set (a copy), sorted by String.
func (s Specifiers) Clauses() []Specifier { return append([]Specifier(nil), s.specs...) }

// IsEmpty reports whether the set has no clauses.
func (s Specifiers) IsEmpty() bool { return len(s.specs) == 0 }

// String returns the clauses sorted and joined by commas, as packaging does.
func (s Specifiers) String() string {
	parts := make([]string, len(s.specs))
	for i, sp := range s.specs {
		parts[i] = sp.String()
	}
	return strings.Join(parts, ",")
}

// Prereleases reports whether the set admits pre-releases by default: some
// clause names a pre-release with an inclusive operator.
func (s Specifiers) Prereleases() bool {
	for _, sp := range s.specs {
		if sp.Prereleases() {
			return true
		}
	}
	return false
}

// Contains reports whether v satisfies every clause, with packaging's
// default pre-release rule: a pre-release or dev release is admitted only
// when some clause admits pre-releases (so the empty set admits every final
// release and no pre-release, as packaging's SpecifierSet("") does).
func (s Specifiers) Contains(v Version) bool {
	return s.ContainsPrereleases(v, s.Prereleases())
}

// ContainsPrereleases is Contains with the pre-release rule decided by the
// caller, like packaging's contains(v, prereleases=pre).
func (s Specifiers) ContainsPrereleases(v Version, pre bool) bool {
	if v.IsZero() {
		return false
	}
	if !pre && v.IsPrerelease() {
		return false
	}
	for _, sp := range s.specs {
		if !sp.Match(v) {
			return false
		}
	}
	return true
}

// Exact returns the version when the set is exactly one "==V" clause
// without a wildcard.
func (s Specifiers) Exact() (Version, bool) {
	if len(s.specs) != 1 || s.specs[0].Operator != "==" || s.specs[0].wildcard {
		return Version{}, false
	}
	return s.specs[0].v, true
}
