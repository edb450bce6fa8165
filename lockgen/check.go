package lockgen

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/manifests"
)

// CheckResult is what Check found.
type CheckResult struct {
	// Stale lists how the manifest moved away from what the lock was made
	// from ([tool.volboot]); empty for a lock volboot did not make.
	Stale []string
	// Report is manifests.CheckLock of the lock for the platform.
	Report manifests.Report
	// MadeByVolboot says the lock has [tool.volboot] to compare with.
	MadeByVolboot bool
}

// OK says the lock still satisfies the manifest.
func (c CheckResult) OK() bool { return len(c.Stale) == 0 && len(c.Report.Errors) == 0 }

// rawTool is [tool.volboot] as read back.
type rawTool struct {
	Tool struct {
		Volboot *struct {
			Resolver       string              `toml:"resolver"`
			PythonPlatform string              `toml:"python-platform"`
			PythonVersion  string              `toml:"python-version"`
			Indexes        []string            `toml:"indexes"`
			Requirements   map[string][]string `toml:"requirements"`
			Unlocked       []struct {
				Group  string `toml:"group"`
				Reason string `toml:"reason"`
			} `toml:"unlocked"`
		} `toml:"volboot"`
	} `toml:"tool"`
}

// Check tells whether the lock (file, data) still satisfies manifest m on
// platform p, without any network: manifests.CheckLock, and for a lock
// `volboot lock` made, whether the groups, their requirements, the indexes
// and the platform are still those it was made from (a requirement removed
// from the manifest leaves a lock that CheckLock accepts but that installs
// too much). An error means the lock cannot be read.
func Check(m *manifests.Manifest, p manifests.Platform, file string, data []byte) (CheckResult, error) {
	l, err := pylock.Parse(file, data)
	if err != nil {
		return CheckResult{}, err
	}
	res := CheckResult{Report: m.CheckLock(l, p)}
	var raw rawTool
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw); err != nil {
		return CheckResult{}, fmt.Errorf("%s: %w", file, err)
	}
	t := raw.Tool.Volboot
	if t == nil {
		return res, nil
	}
	res.MadeByVolboot = true
	stale := func(format string, args ...any) { res.Stale = append(res.Stale, fmt.Sprintf(format, args...)) }
	if want := PythonPlatform(p); t.PythonPlatform != want || t.PythonVersion != PythonVersion(p) {
		stale("the lock was made for Python %s on %s; the manifest's target is now Python %s on %s", t.PythonVersion, t.PythonPlatform, PythonVersion(p), want)
	}
	var indexes []string
	for _, ix := range m.Indexes {
		indexes = append(indexes, ix.URL)
	}
	if strings.Join(indexes, "\n") != strings.Join(t.Indexes, "\n") {
		stale("the manifest's indexes are %s; the lock was made from %s", listOrNone(indexes), listOrNone(t.Indexes))
	}
	// The build environment of sdists is locked as one more group when
	// the lock holds sdists (resolve.go): it is compared like the others,
	// with the manifest's [build].requirements.
	groups := m.Groups
	if _, ok := t.Requirements[manifests.BuildGroup]; ok {
		groups = append(slices.Clone(groups), manifests.Group{Name: manifests.BuildGroup, Requirements: m.Build.Requirements})
	}
	inGroups := map[string]bool{}
	for _, g := range groups {
		inGroups[g.Name] = true
	}
	for _, g := range groups {
		recorded, ok := t.Requirements[g.Name]
		if !ok {
			stale("group %s is not in the lock: it was added to the manifest since", g.Name)
			continue
		}
		var now []string
		for _, r := range g.Requirements {
			now = append(now, r.String())
		}
		added, removed := diffRequirements(now, recorded)
		if len(added)+len(removed) > 0 {
			var parts []string
			if len(added) > 0 {
				parts = append(parts, "now "+strings.Join(added, ", "))
			}
			if len(removed) > 0 {
				parts = append(parts, "no longer "+strings.Join(removed, ", "))
			}
			stale("group %s's requirements changed since the lock was made: %s", g.Name, strings.Join(parts, "; "))
		}
	}
	var gone []string
	for name := range t.Requirements {
		if !inGroups[name] {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		stale("group %s is in the lock but no longer in the manifest", name)
	}
	for _, u := range t.Unlocked {
		if _, ok := m.Group(u.Group); ok {
			stale("group %s was left out of the lock: %s", u.Group, u.Reason)
		}
	}
	return res, nil
}

// diffRequirements compares two lists of requirements in canonical form.
func diffRequirements(now, recorded []string) (added, removed []string) {
	canon := func(s string) string {
		if r, err := pep508.ParseRequirement(s); err == nil {
			return r.String()
		}
		return s
	}
	have := map[string]bool{}
	for _, r := range recorded {
		have[canon(r)] = true
	}
	want := map[string]bool{}
	for _, r := range now {
		c := canon(r)
		want[c] = true
		if !have[c] {
			added = append(added, c)
		}
	}
	for _, r := range recorded {
		if c := canon(r); !want[c] {
			removed = append(removed, c)
		}
	}
	return added, removed
}

func listOrNone(ss []string) string {
	if len(ss) == 0 {
		return "none (PyPI)"
	}
	return strings.Join(ss, ", ")
}
