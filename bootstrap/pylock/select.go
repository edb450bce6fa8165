package pylock

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
)

// Target is what a lock is installed for: one interpreter on one machine,
// with a chosen set of extras and dependency groups (in Env).
type Target struct {
	Env    pep508.Environment
	Python pep440.Version // the interpreter's full version, for requires-python
	Tags   pep425.Ranking // its supported tags, best first
}

// Selected is a package the target needs and what installs it: the wheel
// chosen for it, or, when no wheel of the package fits the target, its
// sdist, to be built into a wheel. Exactly one of Wheel and Sdist is set.
type Selected struct {
	Package *Package
	Wheel   *Wheel
	Sdist   *Sdist
}

// Digest is the sha256 of the file that installs the package: the wheel's,
// or the sdist's.
func (s Selected) Digest() string {
	if s.Sdist != nil {
		return s.Sdist.SHA256
	}
	return s.Wheel.SHA256
}

// Filename is that file's name.
func (s Selected) Filename() string {
	if s.Sdist != nil {
		return s.Sdist.Filename
	}
	return s.Wheel.Filename
}

// Select applies PEP 751's installation steps for t (requires-python admits
// a pre-release interpreter such as 3.13.0rc1, as pip does): the lock's
// requires-python and environments must admit the target; every package whose
// marker holds is needed; each needs exactly one entry and one compatible
// wheel, the best ranked by t.Tags (ties go to the higher build number), or
// else an sdist, selected to be built (PEP 751 lets an installer fall back
// to the sdist when no wheel fits). All
// problems are reported together, each naming the package and its line.
func (l *Lock) Select(t Target) ([]Selected, error) {
	if !l.RequiresPython.ContainsPrereleases(t.Python, true) {
		return nil, fmt.Errorf("%s: the lock requires Python %s, the interpreter is %s", l.pos.Where("requires-python"), l.RequiresPython, t.Python)
	}
	if len(l.Environments) > 0 {
		ok := false
		for _, m := range l.Environments {
			holds, err := m.Evaluate(t.Env)
			if err != nil {
				return nil, fmt.Errorf("%s: environments: %v", l.pos.Where("environments"), err)
			}
			ok = ok || holds
		}
		if !ok {
			return nil, fmt.Errorf("%s: this machine matches none of the lock's environments; re-lock for it", l.pos.Where("environments"))
		}
	}
	var errs []error
	var out []Selected
	seen := map[string]*Package{}
	for _, p := range l.Packages {
		needed, err := p.Marker.Evaluate(t.Env)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: package %s: marker: %v", l.Where(p), p.Name, err))
			continue
		}
		if !needed {
			continue
		}
		if prev, dup := seen[p.Normalized]; dup {
			errs = append(errs, fmt.Errorf("%s: package %s is listed twice for this target (also at %s); a lock must have one entry per package per environment", l.Where(p), p.Name, l.Where(prev)))
			continue
		}
		seen[p.Normalized] = p
		if err := l.admits(p, t); err != nil {
			errs = append(errs, err)
			continue
		}
		w, err := l.bestWheel(p, t.Tags)
		if err != nil {
			if p.Sdist != nil {
				out = append(out, Selected{Package: p, Sdist: p.Sdist})
				continue
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, Selected{Package: p, Wheel: w})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// SelectWheels selects, for t, the packages named (PEP 503 normalized
// names) among those whose markers hold, each with its best wheel: what a
// build environment is made of (its packages are installed from wheels
// only, never built). A name the lock lacks for t, one listed twice, and
// one without a wheel for t are errors, reported together; the result is
// in the order of names.
func (l *Lock) SelectWheels(t Target, names []string) ([]Selected, error) {
	var errs []error
	byName := map[string][]*Package{}
	for _, p := range l.Packages {
		holds, err := p.Marker.Evaluate(t.Env)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: package %s: marker: %v", l.Where(p), p.Name, err))
			continue
		}
		if holds {
			byName[p.Normalized] = append(byName[p.Normalized], p)
		}
	}
	var out []Selected
	for _, n := range names {
		ps := byName[n]
		switch {
		case len(ps) == 0:
			errs = append(errs, fmt.Errorf("%s: no package %s for dependency groups %s", l.File, n, strings.Join(t.Env.DependencyGroups, ", ")))
			continue
		case len(ps) > 1:
			errs = append(errs, fmt.Errorf("%s: package %s is listed twice for this target (also at %s)", l.Where(ps[1]), ps[1].Name, l.Where(ps[0])))
			continue
		}
		p := ps[0]
		if err := l.admits(p, t); err != nil {
			errs = append(errs, err)
			continue
		}
		w, err := l.bestWheel(p, t.Tags)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Selected{Package: p, Wheel: w})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// admits says why p's requires-python excludes t's interpreter, if it does.
func (l *Lock) admits(p *Package, t Target) error {
	if p.RequiresPython.ContainsPrereleases(t.Python, true) {
		return nil
	}
	return fmt.Errorf("%s: package %s %s requires Python %s, the interpreter is %s", l.Where(p), p.Name, p.Version, p.RequiresPython, t.Python)
}

func (l *Lock) bestWheel(p *Package, r pep425.Ranking) (*Wheel, error) {
	if len(p.Wheels) == 0 {
		srcs := p.OtherSources
		if p.Sdist != nil {
			srcs = append([]string{"sdist"}, srcs...)
		}
		src := "no source"
		if len(srcs) > 0 {
			src = "only " + strings.Join(srcs, ", ")
		}
		return nil, fmt.Errorf("%s: package %s %s has %s and no wheel: build a wheel for it (pip wheel / uv build) and lock it with its url (or path) and sha256", l.Where(p), p.Name, p.Version, src)
	}
	var best *Wheel
	bestRank := 0
	for _, w := range p.Wheels {
		rank, ok := r.Rank(w.Parsed.Tags)
		if !ok {
			continue
		}
		if best == nil || rank < bestRank || (rank == bestRank && buildNumber(w.Parsed.Build) > buildNumber(best.Parsed.Build)) {
			best, bestRank = w, rank
		}
	}
	if best == nil {
		var names []string
		for _, w := range p.Wheels {
			names = append(names, w.Filename)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%s: package %s %s has no wheel for this interpreter (wheels: %s); re-lock for this platform and Python", l.Where(p), p.Name, p.Version, strings.Join(names, ", "))
	}
	return best, nil
}

// buildNumber is the leading number of a wheel build tag; -1 when absent.
func buildNumber(tag string) int {
	i := 0
	for i < len(tag) && tag[i] >= '0' && tag[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(tag[:i])
	if err != nil {
		return -1
	}
	return n
}
