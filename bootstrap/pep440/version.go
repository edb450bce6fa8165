// Package pep440 implements PEP 440 version identifiers and version
// specifiers, as the Python packaging ecosystem compares and matches them.
//
// The reference is the `packaging` library (versions 22 and later, which
// follow today's specification); our oracle test also runs packaging 21.3,
// vendored by pip, on the cases where the two agree.
//
// Why not aquasecurity/go-pep440-version (which go.mod carries): it keeps
// numbers in machine integers, accepts some spellings packaging refuses,
// implements `==X.*`, `~=` and the exclusive `<`/`>` rules differently from
// packaging, and has no notion of packaging's prerelease rule for specifier
// sets. Agreement with packaging on every case is the requirement here, so
// this package is our own, written from the PEP and packaging's documented
// behaviour.
//
// Deliberate differences from packaging:
//   - Input must be ASCII. Python's regular expressions treat Unicode
//     whitespace as whitespace and Unicode case folding as case ("K" KELVIN
//     SIGN matches "k"); such inputs are refused here rather than imitated.
//   - Numeric components have unlimited size, as in Python, but are kept as
//     decimal digit strings; leading zeros are dropped in normalization.
//   - There is no LegacyVersion: an invalid version is an error.
//   - `===` with an empty version is refused (packaging's regular expression
//     admits it; it can never match anything).
//   - `==V.*`/`!=V.*` compare the normalized forms of both sides and pad the
//     candidate's release with zeros before cutting it to the prefix's
//     length, as packaging 22+ does: "==1.0.0.*" admits 1.0a1 (a
//     pre-release of 1.0.0). packaging 21.3 compares the spec as written
//     and cuts before padding, so it says no.
//   - Not a difference, but a surprise worth stating: a set's pre-release
//     default counts only inclusive clauses (== >= <= ~= ===) naming a
//     pre-release, so "<3.0a8" alone does not admit 3.0a7 unless the caller
//     asks for pre-releases. packaging 21.3 and later versions agree
//     (pypa/packaging#788).
//
// Values are immutable after parsing and safe for concurrent use.
package pep440

import (
	"fmt"
	"regexp"
	"strings"
)

// versionPattern is PEP 440's appendix regular expression, matched against
// lowercased ASCII input.
const versionPattern = `v?` +
	`(?:(?P<epoch>[0-9]+)!)?` +
	`(?P<release>[0-9]+(?:\.[0-9]+)*)` +
	`(?P<pre>[-_\.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_\.]?(?P<pre_n>[0-9]+)?)?` +
	`(?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_\.]?(?P<post_l>post|rev|r)[-_\.]?(?P<post_n2>[0-9]+)?))?` +
	`(?P<dev>[-_\.]?(?P<dev_l>dev)[-_\.]?(?P<dev_n>[0-9]+)?)?` +
	`(?:\+(?P<local>[a-z0-9]+(?:[-_\.][a-z0-9]+)*))?`

var versionRE = regexp.MustCompile(`^` + versionPattern + `$`)

// Submatch indices of versionRE's groups, looked up once.
var (
	reEpoch   = versionRE.SubexpIndex("epoch")
	reRelease = versionRE.SubexpIndex("release")
	rePreL    = versionRE.SubexpIndex("pre_l")
	rePreN    = versionRE.SubexpIndex("pre_n")
	rePost    = versionRE.SubexpIndex("post")
	rePostN1  = versionRE.SubexpIndex("post_n1")
	rePostN2  = versionRE.SubexpIndex("post_n2")
	reDev     = versionRE.SubexpIndex("dev")
	reDevN    = versionRE.SubexpIndex("dev_n")
	reLocal   = versionRE.SubexpIndex("local")
)

// Version is a parsed PEP 440 version. The zero value is not a valid
// version; obtain one from Parse.
type Version struct {
	epoch   string   // digits, no leading zeros ("0" when absent)
	release []string // digits, no leading zeros
	preL    string   // "", "a", "b" or "rc"
	preN    string
	hasPost bool
	postN   string
	hasDev  bool
	devN    string
	local   []string // lowercased; numeric parts without leading zeros
}

// pySpace is the ASCII whitespace Python's \s and str.strip() remove.
const pySpace = " \t\n\r\f\v\x1c\x1d\x1e\x1f"

// Parse parses a PEP 440 version, accepting every spelling PEP 440's
// normalization rules allow ("1.0.0-RC1", "v1.0", "1.0_post2", "1.0-1",
// surrounding whitespace). The error names the input.
func Parse(s string) (Version, error) {
	if !isASCII(s) {
		return Version{}, fmt.Errorf("invalid version %q: not ASCII", s)
	}
	m := versionRE.FindStringSubmatch(strings.ToLower(strings.Trim(s, pySpace)))
	if m == nil {
		return Version{}, fmt.Errorf("invalid version %q: not a PEP 440 version", s)
	}
	v := Version{epoch: "0"}
	if e := m[reEpoch]; e != "" {
		v.epoch = trimZeros(e)
	}
	for _, p := range strings.Split(m[reRelease], ".") {
		v.release = append(v.release, trimZeros(p))
	}
	if l := m[rePreL]; l != "" {
		switch l {
		case "alpha":
			l = "a"
		case "beta":
			l = "b"
		case "c", "pre", "preview":
			l = "rc"
		}
		v.preL, v.preN = l, trimZeros(m[rePreN])
	}
	if m[rePost] != "" {
		v.hasPost = true
		v.postN = trimZeros(m[rePostN1] + m[rePostN2])
	}
	if m[reDev] != "" {
		v.hasDev = true
		v.devN = trimZeros(m[reDevN])
	}
	if l := m[reLocal]; l != "" {
		for _, p := range strings.FieldsFunc(l, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
			if isDigits(p) {
				p = trimZeros(p)
			}
			v.local = append(v.local, p)
		}
	}
	return v, nil
}

// MustParse is Parse for constants in code and tests; it panics on error.
func MustParse(s string) Version {
	v, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

// IsZero reports whether v is the zero Version (not produced by Parse).
func (v Version) IsZero() bool { return len(v.release) == 0 }

// String returns the normalized form: "1.0rc1", "1!2.0.post1.dev0", "2.8.0+cu128".
func (v Version) String() string {
	var b strings.Builder
	b.WriteString(v.publicString())
	if len(v.local) > 0 {
		b.WriteByte('+')
		b.WriteString(strings.Join(v.local, "."))
	}
	return b.String()
}

func (v Version) publicString() string {
	var b strings.Builder
	b.WriteString(v.BaseString())
	if v.preL != "" {
		b.WriteString(v.preL + v.preN)
	}
	if v.hasPost {
		b.WriteString(".post" + v.postN)
	}
	if v.hasDev {
		b.WriteString(".dev" + v.devN)
	}
	return b.String()
}

// BaseString is packaging's base_version: the epoch (when not 0) and the
// release segment, "1!2.0".
func (v Version) BaseString() string {
	s := strings.Join(v.release, ".")
	if v.epoch != "0" && v.epoch != "" {
		s = v.epoch + "!" + s
	}
	return s
}

// Release returns the release segment as decimal strings (a copy).
func (v Version) Release() []string { return append([]string(nil), v.release...) }

// Epoch returns the epoch as a decimal string ("0" when absent).
func (v Version) Epoch() string { return v.epoch }

// Local returns the local segment ("cu128"), "" when absent.
func (v Version) Local() string { return strings.Join(v.local, ".") }

// IsPrerelease reports whether v is a pre-release or a development release.
func (v Version) IsPrerelease() bool { return v.preL != "" || v.hasDev }

// IsPostrelease reports whether v has a post-release segment.
func (v Version) IsPostrelease() bool { return v.hasPost }

// IsDevrelease reports whether v has a development release segment.
func (v Version) IsDevrelease() bool { return v.hasDev }

// Public returns v without its local segment.
func (v Version) Public() Version {
	v.local = nil
	return v
}

// base returns v reduced to epoch and release.
func (v Version) base() Version {
	return Version{epoch: v.epoch, release: v.release}
}

// Compare returns -1, 0 or +1 as v sorts before, equal to or after o under
// PEP 440 ordering: epoch, release (trailing zeros ignored), then
// dev-only < pre < final < post, dev within each, local last (a version with
// a local segment sorts after the same public version; numeric local parts
// sort after alphanumeric ones).
func (v Version) Compare(o Version) int {
	if c := cmpNum(v.epoch, o.epoch); c != 0 {
		return c
	}
	if c := cmpRelease(v.release, o.release); c != 0 {
		return c
	}
	if c := cmpPre(v, o); c != 0 {
		return c
	}
	// Post: absent sorts before any post number.
	if c := cmpOptional(v.hasPost, v.postN, o.hasPost, o.postN, -1); c != 0 {
		return c
	}
	// Dev: absent sorts after any dev number.
	if c := cmpOptional(v.hasDev, v.devN, o.hasDev, o.devN, +1); c != 0 {
		return c
	}
	return cmpLocal(v.local, o.local)
}

// Equal reports whether v and o compare equal.
func (v Version) Equal(o Version) bool { return v.Compare(o) == 0 }

// preKey ranks the pre-release part: a dev release without pre or post sorts
// before every pre-release (rank 0); pre-releases rank 1; no pre-release
// ranks 2 (after all of them).
func preKey(v Version) int {
	switch {
	case v.preL == "" && !v.hasPost && v.hasDev:
		return 0
	case v.preL != "":
		return 1
	default:
		return 2
	}
}

func cmpPre(v, o Version) int {
	kv, ko := preKey(v), preKey(o)
	if kv != ko {
		return cmpInt(kv, ko)
	}
	if kv != 1 {
		return 0
	}
	if v.preL != o.preL {
		return strings.Compare(v.preL, o.preL) // "a" < "b" < "rc"
	}
	return cmpNum(v.preN, o.preN)
}

// cmpOptional compares optional numbers; absentSign is where an absent one
// sorts relative to a present one.
func cmpOptional(hv bool, nv string, ho bool, no string, absentSign int) int {
	switch {
	case hv && ho:
		return cmpNum(nv, no)
	case hv == ho:
		return 0
	case !hv:
		return absentSign
	default:
		return -absentSign
	}
}

func cmpRelease(a, b []string) int {
	a, b = trimTrailingZeros(a), trimTrailingZeros(b)
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := cmpNum(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

func trimTrailingZeros(r []string) []string {
	for len(r) > 0 && r[len(r)-1] == "0" {
		r = r[:len(r)-1]
	}
	return r
}

// cmpLocal follows packaging: no local sorts first; parts compare pairwise,
// numeric parts above alphanumeric ones, then by length.
func cmpLocal(a, b []string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		da, db := isDigits(a[i]), isDigits(b[i])
		switch {
		case da && db:
			if c := cmpNum(a[i], b[i]); c != 0 {
				return c
			}
		case da:
			return 1
		case db:
			return -1
		default:
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
	}
	return cmpInt(len(a), len(b))
}

// cmpNum compares decimal digit strings without leading zeros.
func cmpNum(a, b string) int {
	if len(a) != len(b) {
		return cmpInt(len(a), len(b))
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func trimZeros(s string) string {
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	return s
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
