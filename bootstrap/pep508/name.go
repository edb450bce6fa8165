// Package pep508 implements PEP 508 dependency specifiers (requirements and
// environment markers), PEP 503 name normalization, and the PEP 751 marker
// sets `extras` and `dependency_groups`.
//
// The reference is the `packaging` library as of today's standards (PEP 685
// extra normalization, PEP 751 set membership); the oracle test runs pip's
// vendored packaging 21.3 on the cases where that older version already
// follows them.
//
// Deliberate differences from packaging:
//   - A marker comparison between two variables, or two literals, compares
//     their values; packaging looks the right-hand literal up as a variable
//     name (or treats a right-hand variable's name as a literal).
//   - Version comparisons in markers admit pre-releases on the left
//     ("3.13.0rc1" >= "3.8" is true, as packaging 22+ does since
//     pypa/packaging#523; 21.3 says false).
//     When the left side is not a valid version, the comparison falls back
//     to Python string comparison, as PEP 508 prescribes (21.3 answers false).
//   - `extra` is compared after PEP 503 normalization of both sides (PEP 685);
//     a missing `extra` in the environment is "" as in packaging 22+.
//   - `extras` and `dependency_groups` are sets: only `in` and `not in`
//     apply, the left side must be a string, both sides are normalized.
//   - Whitespace is PEP 508's: space and tab only.
//   - Extras of a requirement are normalized, deduplicated and sorted.
//
// All values are immutable after parsing and safe for concurrent use.
package pep508

import "strings"

// NormalizeName returns the PEP 503 normalized form of a project, extra or
// group name: lowercase, every run of "-", "_" and "." replaced by one "-".
func NormalizeName(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	sep := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '-' || c == '_' || c == '.' {
			sep = true
			continue
		}
		if sep {
			b.WriteByte('-')
			sep = false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	if sep {
		b.WriteByte('-')
	}
	return b.String()
}

// ValidName reports whether name is a valid project name under PEP 508 and
// the core metadata specification: ASCII letters and digits, with ".", "_"
// and "-" allowed inside but not at either end.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case isAlnum(c):
		case (c == '-' || c == '_' || c == '.') && i > 0 && i < len(name)-1:
		default:
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isNameChar(c byte) bool { return isAlnum(c) || c == '-' || c == '_' || c == '.' }
