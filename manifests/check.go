package manifests

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
)

// Platform describes the machine a manifest is checked for when no
// interpreter is probed: the container volboot targets.
type Platform struct {
	Major, Minor int    // Python version
	Machine      string // "x86_64"
	GlibcMajor   int
	GlibcMinor   int
}

// DefaultPlatform is a python:3.X-slim image on x86_64 (Debian bookworm,
// glibc 2.36), with the lowest 3.X that the manifest's python.requires
// admits (3.11 when it admits none of 3.8 to 3.14).
func (m *Manifest) DefaultPlatform() Platform {
	p := Platform{Major: 3, Minor: 11, Machine: "x86_64", GlibcMajor: 2, GlibcMinor: 36}
	for minor := 8; minor <= 14; minor++ {
		v, err := pep440.Parse(fmt.Sprintf("3.%d.0", minor))
		if err == nil && m.Python.Requires.Contains(v) {
			p.Minor = minor
			break
		}
	}
	return p
}

// Target builds the lock target of a platform for the given groups.
func (p Platform) Target(groups []string) (pylock.Target, error) {
	full := fmt.Sprintf("%d.%d.0", p.Major, p.Minor)
	v, err := pep440.Parse(full)
	if err != nil {
		return pylock.Target{}, err
	}
	tags := pep425.CompatibleTags(pep425.Interpreter{
		Implementation: "cpython", Major: p.Major, Minor: p.Minor,
		ABI:      fmt.Sprintf("cp%d%d", p.Major, p.Minor),
		Platform: "linux_" + p.Machine, Machine: p.Machine,
		Libc: "glibc", LibcMajor: p.GlibcMajor, LibcMinor: p.GlibcMinor,
	})
	return pylock.Target{
		Env: pep508.Environment{
			Values: map[string]string{
				"os_name": "posix", "sys_platform": "linux", "platform_machine": p.Machine,
				"platform_python_implementation": "CPython", "platform_system": "Linux",
				"platform_release": "", "platform_version": "",
				"python_version": fmt.Sprintf("%d.%d", p.Major, p.Minor), "python_full_version": full,
				"implementation_name": "cpython", "implementation_version": full,
			},
			DependencyGroups: groups,
		},
		Python: v,
		Tags:   pep425.NewRanking(tags),
	}, nil
}

func (p Platform) String() string {
	return fmt.Sprintf("CPython %d.%d on Linux %s (glibc %d.%d)", p.Major, p.Minor, p.Machine, p.GlibcMajor, p.GlibcMinor)
}

// Report is the outcome of checking a manifest against its lock.
type Report struct {
	Errors   []string // the manifest and lock disagree: fix before deploying
	Warnings []string // worth knowing, not wrong
}

// CheckLock cross-checks the manifest and its lock for platform p: the
// Python constraints must overlap; every requirement of every group must be
// satisfied by a lock package reachable from that group; every group's
// packages must have a wheel for p; and lock packages no group reaches are
// reported as warnings.
func (m *Manifest) CheckLock(l *pylock.Lock, p Platform) Report {
	var r Report
	r.Warnings = append(r.Warnings, l.Warnings...)
	targets := map[string]pylock.Target{}
	var targetErrs []string
	for _, g := range m.Groups {
		t, err := p.Target([]string{g.Name})
		if err != nil {
			targetErrs = append(targetErrs, err.Error())
			continue
		}
		targets[g.Name] = t
	}
	r.Errors = append(r.Errors, targetErrs...)
	r.Errors = append(r.Errors, m.CheckRequirements(l, func(group string) (pep508.Environment, bool) {
		t, ok := targets[group]
		return t.Env, ok
	})...)
	reached := map[*pylock.Package]bool{}
	var sdists []string // "group g: package x is built from its sdist"
	for _, g := range m.Groups {
		t, ok := targets[g.Name]
		if !ok {
			continue
		}
		for _, pkg := range l.Packages {
			if holds, err := pkg.Marker.Evaluate(t.Env); err == nil && holds {
				reached[pkg] = true
			}
		}
		sel, err := l.Select(t)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				r.Errors = append(r.Errors, fmt.Sprintf("group %s on %s: %s", g.Name, p, line))
			}
		}
		for _, s := range sel {
			if s.Sdist != nil {
				sdists = append(sdists, fmt.Sprintf("group %s on %s: package %s %s has no wheel for it and is built from its sdist %s (%s)", g.Name, p, s.Package.Name, s.Package.Version, s.Sdist.Filename, l.WhereSdist(s.Sdist)))
			}
		}
	}
	// Sdists need a build environment the lock provides.
	if len(sdists) > 0 {
		r.Warnings = append(r.Warnings, sdists...)
		if t, err := p.Target([]string{BuildGroup}); err == nil {
			if _, err := m.BuildEnvironment(l, t); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					r.Errors = append(r.Errors, fmt.Sprintf("build environment on %s: %s", p, line))
				}
			}
			for _, pkg := range l.Packages {
				if holds, err := pkg.Marker.Evaluate(t.Env); err == nil && holds {
					reached[pkg] = true
				}
			}
		}
	}
	for _, pkg := range l.Packages {
		if !reached[pkg] {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: package %s %s is reached by no group on %s (marker %q); it will not be installed", l.Where(pkg), pkg.Name, pkg.Version, p, pkg.Marker.String()))
		}
	}
	sort.Strings(r.Warnings)
	return r
}

// BuildEnvironment selects from l, for t (a target whose dependency
// groups are [BuildGroup]), the wheels of the build environment: one per
// [build] requirement whose marker holds, satisfying it. Each problem is
// a line of the error, naming [build].requirements and how to fix it.
func (m *Manifest) BuildEnvironment(l *pylock.Lock, t pylock.Target) ([]pylock.Selected, error) {
	if len(m.Build.Requirements) == 0 {
		return nil, fmt.Errorf("%s: [build].requirements is empty, so no sdist is built", m.File)
	}
	var names []string
	var reqs []pep508.Requirement
	for _, req := range m.Build.Requirements {
		if req.Marker != nil {
			if holds, err := req.Marker.Evaluate(t.Env); err == nil && !holds {
				continue
			}
		}
		names = append(names, pep508.NormalizeName(req.Name))
		reqs = append(reqs, req)
	}
	sel, err := l.SelectWheels(t, names)
	if err != nil {
		return nil, fmt.Errorf("the build requirements ([build].requirements: %s) must be wheels in the lock, with no marker or one that holds for '%s' in dependency_groups: %w",
			m.buildList(), BuildGroup, err)
	}
	var errs []string
	for i, s := range sel {
		if s.Package.Version == "" {
			continue
		}
		v, err := pep440.Parse(s.Package.Version)
		if err != nil || !reqs[i].Specifier.ContainsPrereleases(v, true) {
			errs = append(errs, fmt.Sprintf("%s: [build].requirements wants %s, the lock has %s %s (%s): re-lock", m.File, reqs[i].String(), s.Package.Name, s.Package.Version, l.Where(s.Package)))
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return sel, nil
}

func (m *Manifest) buildList() string {
	var s []string
	for _, r := range m.Build.Requirements {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

// CheckRequirements is the part of CheckLock that does not depend on which
// wheels exist: the Python constraints overlap, and every requirement of
// every group (whose own marker holds) is satisfied by a lock package that
// the group reaches in the environment env gives for it. Sync, run and
// status refuse a pair that fails it before any download, with these same
// lines (a group env cannot describe is left to the caller's own report).
func (m *Manifest) CheckRequirements(l *pylock.Lock, env func(group string) (pep508.Environment, bool)) []string {
	var errs []string
	if !overlap(m.Python.Requires, l.RequiresPython) {
		errs = append(errs, fmt.Sprintf("%s: python.requires %q and the lock's requires-python %q (%s) admit no common Python version", m.Where("python.requires"), m.Python.Requires, l.RequiresPython, l.File))
	}
	for gi, g := range m.Groups {
		e, ok := env(g.Name)
		if !ok {
			continue
		}
		byName := map[string][]*pylock.Package{}
		for _, pkg := range l.Packages {
			holds, err := pkg.Marker.Evaluate(e)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: package %s: marker: %v", l.Where(pkg), pkg.Name, err))
				continue
			}
			if holds {
				byName[pkg.Normalized] = append(byName[pkg.Normalized], pkg)
			}
		}
		for ri, req := range g.Requirements {
			if req.Marker != nil {
				if holds, err := req.Marker.Evaluate(e); err == nil && !holds {
					continue // not wanted on this platform: nothing to find in the lock
				}
			}
			at := m.Where(fmt.Sprintf("group[%d].requirements[%d]", gi, ri))
			if msg := unsatisfied(l, req, byName[pep508.NormalizeName(req.Name)], g.Name); msg != "" {
				errs = append(errs, at+": "+msg)
			}
		}
	}
	return errs
}

// unsatisfied explains why no package among candidates (those reachable
// from group) satisfies req, or returns "".
func unsatisfied(l *pylock.Lock, req pep508.Requirement, candidates []*pylock.Package, group string) string {
	if len(candidates) == 0 {
		for _, pkg := range l.Packages {
			if pkg.Normalized == pep508.NormalizeName(req.Name) {
				return fmt.Sprintf("%s is in the lock (%s) but its marker does not include group %q: re-lock with the group's requirements", req.Name, l.Where(pkg), group)
			}
		}
		return fmt.Sprintf("%s is not in the lock %s: re-lock after adding it", req.String(), l.File)
	}
	for _, pkg := range candidates {
		if pkg.Version == "" {
			return "" // an unversioned entry (e.g. a direct URL) cannot be checked
		}
		v, err := pep440.Parse(pkg.Version)
		if err == nil && req.Specifier.ContainsPrereleases(v, true) {
			return ""
		}
	}
	var have []string
	for _, pkg := range candidates {
		have = append(have, pkg.Version)
	}
	return fmt.Sprintf("%s is not satisfied by the lock, which has %s %s: re-lock", req.String(), req.Name, strings.Join(have, ", "))
}

// overlap reports whether some CPython release satisfies both sets. Checking
// every 2.x/3.x patch release up to 3.30.40 is exact for any constraint
// people write on Python versions and costs microseconds.
func overlap(a, b pep440.Specifiers) bool {
	if a.IsEmpty() || b.IsEmpty() {
		return true
	}
	for major := 2; major <= 3; major++ {
		for minor := 0; minor <= 30; minor++ {
			for micro := 0; micro <= 40; micro++ {
				v, err := pep440.Parse(fmt.Sprintf("%d.%d.%d", major, minor, micro))
				if err == nil && a.Contains(v) && b.Contains(v) {
					return true
				}
			}
		}
	}
	return false
}

// PairError is a manifest and a lock that disagree: what `volboot manifest
// check` reports, and what sync, run and status refuse to act on.
type PairError struct {
	File     string   // the manifest
	Problems []string // one line each, naming file and line
}

func (e *PairError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s) between the manifest and its lock; fix the manifest or make the lock again (`volboot manifest check` checks the pair without a volume)", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  error: ")
		b.WriteString(p)
	}
	return b.String()
}
