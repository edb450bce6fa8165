package models

import (
	"fmt"
	"path"
	"strings"
)

// IsPattern reports whether a manifest file entry is a glob pattern rather
// than a path: it contains one of the path.Match meta characters * ? [ or
// the escape \.
func IsPattern(entry string) bool { return strings.ContainsAny(entry, `*?[\`) }

// MatchPattern reports whether a repository path matches a pattern.
//
// Patterns are matched segment by segment ('/'-separated) with path.Match
// semantics: '*' and '?' never cross a '/', '[...]' is a character class,
// '\' escapes. Two extensions:
//   - a segment that is exactly "**" matches zero or more whole segments
//     ("**/*.json" matches "a.json" and "x/y/a.json");
//   - a pattern ending in "/" matches everything below that directory (it
//     is read as "dir/**"), as in huggingface_hub's allow_patterns.
//
// Unlike huggingface_hub's allow_patterns (Python fnmatch), "*" does not
// match across directories: "*.safetensors" matches only top-level files;
// write "**/*.safetensors" for every level.
//
// The error is path.ErrBadPattern (wrapped with the pattern) for a
// malformed pattern; it is reported whatever the name.
func MatchPattern(pattern, name string) (bool, error) {
	if strings.HasSuffix(pattern, "/") {
		pattern += "**"
	}
	ps := strings.Split(pattern, "/")
	for _, p := range ps {
		if p == "**" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return false, fmt.Errorf("pattern %q: %w", pattern, err)
		}
	}
	ns := strings.Split(name, "/")
	// ok[i][j]: ps[i:] matches ns[j:]. Filled backwards; O(len(ps)*len(ns))
	// whatever the number of "**" segments.
	ok := make([][]bool, len(ps)+1)
	for i := range ok {
		ok[i] = make([]bool, len(ns)+1)
	}
	ok[len(ps)][len(ns)] = true
	for i := len(ps) - 1; i >= 0; i-- {
		for j := len(ns); j >= 0; j-- {
			if ps[i] == "**" {
				// Match zero segments, or consume one and stay on "**".
				ok[i][j] = ok[i+1][j] || (j < len(ns) && ok[i][j+1])
				continue
			}
			if j == len(ns) {
				continue
			}
			m, _ := path.Match(ps[i], ns[j])
			ok[i][j] = m && ok[i+1][j+1]
		}
	}
	return ok[0][0], nil
}
