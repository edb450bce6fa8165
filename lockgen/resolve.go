package lockgen

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/manifests"
)

// Request says what to lock and with what.
type Request struct {
	Manifest *manifests.Manifest
	Platform manifests.Platform
	// LockFile names the lock in messages and in the check of the result.
	LockFile string
	// Previous is the lock being replaced, or nil. Its pins are uv's
	// preferences (uv keeps them unless the manifest needs otherwise)
	// unless Upgrade is set.
	Previous []byte
	// Upgrade ignores Previous's pins; UpgradePackages frees only these.
	Upgrade         bool
	UpgradePackages []string

	UV      UV
	Runner  Runner
	Fetcher Fetcher
	// TempDir holds uv's inputs and outputs while Lock runs ("" means
	// os.TempDir()); Lock removes what it made there.
	TempDir string
	// Env is the environment uv runs with (UVEnv filters it).
	Env  []string
	Jobs int // uv runs at once; at least 1
	Log  *zap.Logger
}

// Result is a lock made, not yet written.
type Result struct {
	Data     []byte
	Document *Document
	Groups   []GroupOutcome
	Problems []Problem
	Changes  []Change
	// Check is manifests.CheckLock of Data for the request's platform.
	Check manifests.Report
	// UVRuns counts uv invocations.
	UVRuns int
}

// GroupOutcome says how one group fared.
type GroupOutcome struct {
	Name     string
	Required bool
	Locked   bool
	Packages int    // packages the group installs
	Reason   string // why it is not locked
}

// Problem kinds.
const (
	ProblemUnlocked      = "unlocked"       // an optional group left out of the lock
	ProblemNeedsCompiler = "needs-compiler" // only an sdist, with native code
	ProblemSdistOnly     = "sdist-only"     // only a pure-Python sdist
	ProblemUninspected   = "uninspected"    // only an sdist, which could not be read
)

// Problem is something about the lock a person should act on.
type Problem struct {
	Kind    string
	Group   string // for ProblemUnlocked
	Package string
	Version string
	Groups  []string // groups that install Package
	Message string   // for people; may span lines
}

// Change is a package whose pin moved against the previous lock.
type Change struct {
	Package  string
	Old, New string // "" for added or removed
}

// RequiredGroupError is a required group uv cannot resolve, alone or with
// the groups before it: nothing is written.
type RequiredGroupError struct {
	Group   string
	With    []string // the groups it was resolved with; none: on its own
	UVSaid  string
	Message string
}

func (e *RequiredGroupError) Error() string { return e.Message }

// PythonPlatform is uv's --python-platform for p.
func PythonPlatform(p manifests.Platform) string {
	return fmt.Sprintf("%s-manylinux_%d_%d", p.Machine, p.GlibcMajor, p.GlibcMinor)
}

// PythonVersion is uv's --python-version for p.
func PythonVersion(p manifests.Platform) string { return fmt.Sprintf("%d.%d", p.Major, p.Minor) }

// UVEnv is environ without the UV_* variables that would change what uv
// resolves (indexes, constraints, settings files); the ones about the
// network and the cache stay.
func UVEnv(environ []string) []string {
	keep := map[string]bool{"UV_CACHE_DIR": true, "UV_NATIVE_TLS": true, "UV_HTTP_TIMEOUT": true, "UV_HTTP_RETRIES": true,
		"UV_CONCURRENT_DOWNLOADS": true, "UV_CONCURRENT_BUILDS": true}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "UV_") && !keep[k] {
			continue
		}
		out = append(out, kv)
	}
	return out
}

type session struct {
	req      Request
	manifest *manifests.Manifest // as given (req.Manifest may add the build group)
	previous []byte              // the lock before, for Changes (req.Previous is dropped by --upgrade)
	dir      string
	mu       sync.Mutex
	runs     int
}

// Lock resolves the manifest's groups with uv and builds the lock.
func Lock(ctx context.Context, req Request) (*Result, error) {
	if req.Jobs < 1 {
		req.Jobs = 1
	}
	if req.Log == nil {
		req.Log = zap.NewNop()
	}
	dir, err := os.MkdirTemp(req.TempDir, "volboot-lock-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s := &session{req: req, dir: dir, manifest: req.Manifest, previous: req.Previous}
	if req.Upgrade {
		s.req.Previous = nil
	}
	res, pkgs, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	// A package locked as its sdist is built by the workers, with the
	// wheels of [build].requirements from the same lock (DESIGN.md
	// §5.7): resolve again with them as one more group, so that they are
	// pinned with everything else and marked for it alone.
	if m := req.Manifest; len(m.Build.Requirements) > 0 && needsBuild(pkgs) {
		with := *m
		with.Groups = append(slices.Clone(m.Groups), manifests.Group{Name: manifests.BuildGroup, Requirements: m.Build.Requirements})
		s.req.Manifest = &with
		req.Log.Info("the lock holds sdists: resolving again with their build environment as group "+manifests.BuildGroup,
			zap.Strings("build_requirements", buildRequirements(m)))
		if res, _, err = s.lock(ctx); err != nil {
			return nil, err
		}
	}
	res.UVRuns = s.runs
	return res, nil
}

// needsBuild reports whether some package is locked with an sdist and no
// wheel.
func needsBuild(pkgs []Package) bool {
	for _, p := range pkgs {
		if p.Sdist != nil && len(p.Wheels) == 0 && p.Archive == nil {
			return true
		}
	}
	return false
}

func buildRequirements(m *manifests.Manifest) []string {
	var out []string
	for _, r := range m.Build.Requirements {
		out = append(out, r.String())
	}
	return out
}

// lock resolves s.req.Manifest's groups once and builds the lock; the
// result's groups and check are the original manifest's.
func (s *session) lock(ctx context.Context) (*Result, []Package, error) {
	req := s.req
	m := req.Manifest
	var names []string
	for _, g := range m.Groups {
		names = append(names, g.Name)
	}
	req.Log.Info("resolving with uv", zap.String("manifest", m.File), zap.Strings("groups", names),
		zap.String("uv", req.UV.Version), zap.String("python_platform", PythonPlatform(req.Platform)), zap.String("python_version", PythonVersion(req.Platform)))

	joint, locked, unlocked, err := s.resolveJoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	perGroup, err := s.resolveGroups(ctx, locked, joint)
	if err != nil {
		return nil, nil, err
	}
	pkgs, err := s.combine(joint, locked, perGroup)
	if err != nil {
		return nil, nil, err
	}
	if err := s.fillArchives(ctx, pkgs); err != nil {
		return nil, nil, err
	}
	problems, err := s.inspectSdists(ctx, pkgs)
	if err != nil {
		return nil, nil, err
	}

	res := &Result{}
	for _, g := range m.Groups {
		o := GroupOutcome{Name: g.Name, Required: g.Required}
		if reason, ok := unlocked[g.Name]; ok {
			o.Reason = reason.short
			res.Problems = append(res.Problems, Problem{Kind: ProblemUnlocked, Group: g.Name, Message: reason.long})
		} else {
			o.Locked = true
			o.Packages = len(perGroup[g.Name])
		}
		if g.Name != manifests.BuildGroup { // not the manifest's: its problem says enough
			res.Groups = append(res.Groups, o)
		}
	}
	res.Problems = append(res.Problems, problems...)
	res.Document = s.document(pkgs, locked, unlocked)
	res.Data = res.Document.Encode()
	l, err := pylock.Parse(req.LockFile, res.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("the lock volboot made does not read back (a bug in volboot): %w", err)
	}
	res.Check = s.manifest.CheckLock(l, req.Platform)
	res.Changes = changes(req.LockFile, s.previous, pkgs)
	return res, pkgs, nil
}

type reason struct{ short, long string }

// resolveJoint resolves every group together; when uv fails, it adds the
// groups one at a time to find the ones to leave out.
func (s *session) resolveJoint(ctx context.Context) ([]Resolved, []manifests.Group, map[string]reason, error) {
	m := s.req.Manifest
	all := m.Groups
	res, fail, err := s.compile(ctx, "joint", requirementsOf(all), nil, true, s.req.UpgradePackages)
	if err != nil {
		return nil, nil, nil, err
	}
	if fail == nil {
		return res, all, map[string]reason{}, nil
	}
	s.req.Log.Info("the groups do not resolve together; adding them one at a time", zap.String("uv", firstLine(fail.Said)))
	ordered := make([]manifests.Group, 0, len(all))
	for _, g := range all {
		if g.Required {
			ordered = append(ordered, g)
		}
	}
	for _, g := range all {
		if !g.Required {
			ordered = append(ordered, g)
		}
	}
	var cur []manifests.Group
	var curRes []Resolved
	unlocked := map[string]reason{}
	for i, g := range ordered {
		try := append(append([]manifests.Group{}, cur...), g)
		r, f, err := s.compile(ctx, fmt.Sprintf("joint-%d", i+1), requirementsOf(try), nil, true, s.req.UpgradePackages)
		if err != nil {
			return nil, nil, nil, err
		}
		if f == nil {
			cur, curRes = try, r
			continue
		}
		// Alone, or only in company?
		alone := f
		if len(cur) > 0 {
			_, fa, err := s.compile(ctx, "alone-"+g.Name, requirementsOf([]manifests.Group{g}), nil, false, nil)
			if err != nil {
				return nil, nil, nil, err
			}
			alone = fa
		}
		why := s.explain(g, groupNames(cur), f, alone)
		if g.Required {
			with := groupNames(cur)
			if alone != nil {
				with = nil
			}
			return nil, nil, nil, &RequiredGroupError{Group: g.Name, With: with, UVSaid: f.Said, Message: why.long}
		}
		s.req.Log.Warn("optional group left out of the lock", zap.String("group", g.Name), zap.String("reason", why.short))
		unlocked[g.Name] = why
	}
	if len(cur) == 0 {
		return nil, nil, nil, errors.New("no group of the manifest can be resolved; nothing to lock")
	}
	// Keep the manifest's order.
	var locked []manifests.Group
	for _, g := range all {
		if _, out := unlocked[g.Name]; !out {
			locked = append(locked, g)
		}
	}
	return curRes, locked, unlocked, nil
}

// explain words why group g could not be resolved.
func (s *session) explain(g manifests.Group, with []string, joint, alone *uvFailure) reason {
	var b strings.Builder
	kind := "optional"
	if g.Required {
		kind = "required"
	}
	said := joint.Said
	if alone != nil {
		said = alone.Said
	}
	d := DiagnoseUV(said)
	switch {
	case d.Network:
		what := "an index"
		if d.URL != "" {
			what = d.URL
		}
		fmt.Fprintf(&b, "group %s (%s) cannot be resolved: uv %s could not fetch %s (a network failure, not a conflict); uv said:\n", g.Name, kind, s.req.UV.Version, what)
	case alone != nil:
		fmt.Fprintf(&b, "group %s (%s) cannot be resolved for %s from the indexes; uv %s said:\n", g.Name, kind, s.req.Platform, s.req.UV.Version)
	default:
		fmt.Fprintf(&b, "group %s (%s) resolves on its own but not together with groups %s (one version per package across groups); uv %s said:\n", g.Name, kind, strings.Join(with, ", "), s.req.UV.Version)
	}
	for _, line := range strings.Split(strings.TrimRight(lastLines([]byte(said), 40), "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	switch {
	case d.Network:
		fmt.Fprintf(&b, "Check that this machine reaches the manifest's indexes (%s) and the URLs its requirements name, or change them; uv learnt nothing about the requirements.", listOrNone(indexURLs(s.req.Manifest)))
	case alone != nil:
		fmt.Fprintf(&b, "If a requirement has no usable file on the indexes (a package with no wheel for this platform), pin a wheel built for this stack in group %s's requirements by direct URL with its sha256, e.g.\n    %q\nand run volboot lock again.", g.Name, pinExample("name", "1.0", s.req.Platform))
	default:
		b.WriteString("Change the group's requirements (or the others') so that one version of each package satisfies every group, and run volboot lock again.")
	}
	if g.Required {
		b.WriteString(" Nothing was written.")
	} else {
		fmt.Fprintf(&b, " Until then group %s is left out of the lock, and the other groups are locked.", g.Name)
	}
	short := "cannot be resolved from the indexes: " + firstLine(said)
	switch {
	case d.Network:
		short = "uv could not fetch " + orUnnamed(d.URL) + ": " + firstLine(said)
	case alone == nil:
		short = "conflicts with groups " + strings.Join(with, ", ") + ": " + firstLine(said)
	}
	return reason{short: short, long: b.String()}
}

func indexURLs(m *manifests.Manifest) []string {
	var out []string
	for _, ix := range m.Indexes {
		out = append(out, ix.URL)
	}
	return out
}

// indexFold is strings.Index ignoring ASCII case, as a byte offset into s
// (strings.ToLower(s) may differ from s in length).
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// UVDiagnosis is what volboot reads from a failed uv run's stderr.
type UVDiagnosis struct {
	// Network: uv could not fetch something (DNS, connection, retries
	// exhausted, an HTTP error status): the failure says nothing about
	// whether the requirements resolve.
	Network bool
	URL     string // the URL uv names as failing, if any
}

// DiagnoseUV reads uv's error output. uv words its errors as a chain of
// "error: …" and "  Caused by:"/"  cause: …" lines; a failed fetch names
// its URL after "Failed to fetch:", in backticks or not.
func DiagnoseUV(stderr string) UVDiagnosis {
	var d UVDiagnosis
	for _, line := range strings.Split(stderr, "\n") {
		l := strings.TrimSpace(line)
		low := strings.ToLower(l)
		for _, sign := range []string{"failed to fetch", "error sending request", "dns error", "request failed after", "connection refused", "operation timed out", "http status server error", "http status client error"} {
			if strings.Contains(low, sign) {
				d.Network = true
			}
		}
		if d.URL != "" {
			continue
		}
		if i := indexFold(l, "failed to fetch:"); i >= 0 {
			rest := strings.TrimSpace(l[i+len("failed to fetch:"):])
			rest = strings.Trim(rest, "`'\"")
			if f := strings.Fields(rest); len(f) > 0 {
				if u, err := url.Parse(strings.Trim(f[0], "`'\"")); err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http") {
					d.URL = u.String()
				}
			}
		}
	}
	return d
}

// pinExample is a requirement pinning a wheel by URL, for messages.
func pinExample(name, version string, p manifests.Platform) string {
	file := strings.ReplaceAll(name, "-", "_")
	return fmt.Sprintf("%s @ https://example.org/%s-%s-cp%d%d-cp%d%d-linux_%s.whl#sha256=<the wheel's sha256, 64 hex digits>",
		name, file, version, p.Major, p.Minor, p.Major, p.Minor, p.Machine)
}

// resolveGroups resolves each locked group alone, constrained to the
// joint pins, and returns the packages of each, by normalized name.
func (s *session) resolveGroups(ctx context.Context, groups []manifests.Group, joint []Resolved) (map[string]map[string]Resolved, error) {
	var constraints []string
	for _, p := range joint {
		constraints = append(constraints, p.Name+"=="+p.Version)
	}
	out := map[string]map[string]Resolved{}
	var mu sync.Mutex
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(s.req.Jobs)
	for _, g := range groups {
		eg.Go(func() error {
			reqs := requirementsOf([]manifests.Group{g})
			res, fail, err := s.compileWith(ctx, "group-"+g.Name, reqs, constraints, false, Compile{Offline: true})
			if err != nil {
				return err
			}
			if fail != nil {
				s.req.Log.Debug("offline per-group run failed; running it online", zap.String("group", g.Name), zap.String("uv", firstLine(fail.Said)))
				if res, fail, err = s.compile(ctx, "group-"+g.Name+"-online", reqs, constraints, false, nil); err != nil {
					return err
				}
			}
			if fail != nil {
				return fmt.Errorf("group %s does not resolve within the pins of all groups together, which it is part of (uv %s, exit %d):\n%s", g.Name, s.req.UV.Version, fail.ExitCode, lastLines([]byte(fail.Said), 40))
			}
			byName := map[string]Resolved{}
			for _, p := range res {
				byName[p.Normalized] = p
			}
			mu.Lock()
			out[g.Name] = byName
			mu.Unlock()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// combine gives each package of the joint resolution its groups and its
// marker, and checks the markers by evaluating them for every group.
func (s *session) combine(joint []Resolved, groups []manifests.Group, perGroup map[string]map[string]Resolved) ([]Package, error) {
	var pkgs []Package
	var errs []error
	for _, p := range joint {
		var terms []markerTerm
		var in []string
		for _, g := range groups {
			gp, ok := perGroup[g.Name][p.Normalized]
			if !ok {
				continue
			}
			if gp.Version != p.Version {
				errs = append(errs, fmt.Errorf("group %s resolved %s to %s, but all groups together to %s, although it was constrained to it", g.Name, p.Name, gp.Version, p.Version))
				continue
			}
			in = append(in, g.Name)
			terms = append(terms, markerTerm{group: g.Name, env: gp.Marker})
		}
		if len(in) == 0 {
			s.req.Log.Warn("a package of the joint resolution is in no group's own resolution; left out", zap.String("package", p.Name), zap.String("version", p.Version))
			continue
		}
		pkgs = append(pkgs, Package{Resolved: p, Marker: combineMarker(terms), Groups: in})
	}
	for g, byName := range perGroup {
		for _, p := range byName {
			if !containsPkg(joint, p.Normalized) {
				errs = append(errs, fmt.Errorf("group %s resolved %s %s, which the resolution of all groups together does not hold", g, p.Name, p.Version))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("uv's per-group resolutions disagree with the joint one: %w", err)
	}
	if err := checkMarkers(pkgs, groups, s.req.Platform); err != nil {
		return nil, err
	}
	return pkgs, nil
}

func containsPkg(ps []Resolved, normalized string) bool {
	for _, p := range ps {
		if p.Normalized == normalized {
			return true
		}
	}
	return false
}

// markerTerm is one group's claim on a package, under uv's environment
// marker for that group's resolution ("" when none).
type markerTerm struct {
	group string
	env   string
}

// combineMarker writes the marker of a package from its groups' terms:
// `'a' in dependency_groups or 'b' in dependency_groups`, and
// `(ENV) and (...)` where uv wrote an environment marker ENV. Terms with
// the same ENV share one clause; groups keep the order given.
func combineMarker(terms []markerTerm) string {
	var envs []string
	byEnv := map[string][]string{}
	for _, t := range terms {
		if _, ok := byEnv[t.env]; !ok {
			envs = append(envs, t.env)
		}
		byEnv[t.env] = append(byEnv[t.env], t.group)
	}
	clause := func(env string, groups []string) string {
		var gs []string
		for _, g := range groups {
			gs = append(gs, "'"+g+"' in dependency_groups")
		}
		membership := strings.Join(gs, " or ")
		if env == "" {
			return membership
		}
		if len(gs) > 1 {
			membership = "(" + membership + ")"
		}
		return "(" + env + ") and " + membership
	}
	if len(envs) == 1 {
		return clause(envs[0], byEnv[envs[0]])
	}
	var parts []string
	for _, env := range envs {
		parts = append(parts, "("+clause(env, byEnv[env])+")")
	}
	return strings.Join(parts, " or ")
}

// checkMarkers evaluates every package's marker for every group on the
// platform: it must hold exactly for the groups the package is in.
func checkMarkers(pkgs []Package, groups []manifests.Group, p manifests.Platform) error {
	var errs []error
	for _, g := range groups {
		t, err := p.Target([]string{g.Name})
		if err != nil {
			return err
		}
		for _, pkg := range pkgs {
			m, err := pep508.ParseMarker(pkg.Marker)
			if err != nil {
				errs = append(errs, fmt.Errorf("package %s: the marker volboot made, %q: %v", pkg.Name, pkg.Marker, err))
				continue
			}
			holds, err := m.Evaluate(t.Env)
			if err != nil {
				errs = append(errs, fmt.Errorf("package %s: marker %q on %s: %v", pkg.Name, pkg.Marker, p, err))
				continue
			}
			want := contains(pkg.Groups, g.Name)
			if holds != want {
				errs = append(errs, fmt.Errorf("package %s: marker %q is %v for group %s on %s, but the group's resolution %s it (uv's environment marker does not hold there)",
					pkg.Name, pkg.Marker, holds, g.Name, p, map[bool]string{true: "holds", false: "does not hold"}[want]))
			}
		}
	}
	return errors.Join(errs...)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fillArchives measures the direct-URL files uv locked without a size,
// checks their sha256, and turns wheels among them into wheel entries.
func (s *session) fillArchives(ctx context.Context, pkgs []Package) error {
	for i := range pkgs {
		a := pkgs[i].Archive
		if a == nil {
			continue
		}
		if s.req.Fetcher == nil {
			return fmt.Errorf("package %s: uv locked a direct URL without its size, and there is no way to fetch it here", pkgs[i].Name)
		}
		if a.Size < 0 {
			got, err := measure(ctx, s.req.Fetcher, a.URL)
			if err != nil {
				return fmt.Errorf("package %s: measure the size of %s, which uv does not write: %w", pkgs[i].Name, a.URL, err)
			}
			if got.SHA256 != a.SHA256 {
				return fmt.Errorf("package %s: %w", pkgs[i].Name, &MismatchError{URL: a.URL, WantSHA256: a.SHA256, WantSize: -1, GotSHA256: got.SHA256, GotSize: got.Size})
			}
			a.Size = got.Size
		}
		name := a.Name
		if name == "" {
			if u, err := url.Parse(a.URL); err == nil {
				if n, err := url.PathUnescape(path.Base(u.Path)); err == nil {
					name = n
				}
			}
		}
		if strings.HasSuffix(strings.ToLower(name), ".whl") && a.Subdirectory == "" {
			w := *a
			w.Name = name
			pkgs[i].Wheels = append(pkgs[i].Wheels, w)
			pkgs[i].Archive = nil
		}
	}
	return nil
}

// inspectSdists reads each package that has only an sdist and reports it:
// with native code a worker cannot build it; pure Python, volboot does not
// build it yet. An sdist whose bytes are not those uv locked is an error.
func (s *session) inspectSdists(ctx context.Context, pkgs []Package) ([]Problem, error) {
	var out []Problem
	for _, p := range pkgs {
		if len(p.Wheels) > 0 || p.Sdist == nil {
			continue
		}
		who := groupPhrase(s.req.Manifest, p.Groups)
		base := Problem{Package: p.Name, Version: p.Version, Groups: p.Groups}
		if s.req.Fetcher == nil {
			base.Kind = ProblemUninspected
			base.Message = fmt.Sprintf("%s %s, %s, has no wheel on the indexes, only an sdist, which volboot did not read", p.Name, p.Version, who)
			out = append(out, base)
			continue
		}
		c, err := inspectSdist(ctx, s.req.Fetcher, p.Sdist)
		var mismatch *MismatchError
		if errors.As(err, &mismatch) {
			return nil, fmt.Errorf("package %s %s: %w", p.Name, p.Version, err)
		}
		switch {
		case err != nil:
			base.Kind = ProblemUninspected
			base.Message = fmt.Sprintf("%s %s, %s, has no wheel on the indexes, only an sdist, which volboot could not look into: %v", p.Name, p.Version, who, err)
		case len(c.Native) > 0:
			base.Kind = ProblemNeedsCompiler
			more := ""
			if len(c.Native) > 1 {
				more = fmt.Sprintf(" and %d more", len(c.Native)-1)
			}
			base.Message = fmt.Sprintf("%s %s, %s, has no wheel for %s on the indexes, only an sdist with native code (%s%s): a worker cannot build it. Pin a wheel built for this stack in the manifest, in %s, by direct URL with its sha256, e.g.\n    %q\nand run volboot lock again. %s",
				p.Name, p.Version, who, s.req.Platform, c.Native[0], more, groupsRequirements(p.Groups), pinExample(p.Name, p.Version, s.req.Platform), untilThen(s.req.Manifest, p.Groups))
		default:
			base.Kind = ProblemSdistOnly
			base.Message = fmt.Sprintf("%s %s, %s, has no wheel on the indexes, only a pure-Python sdist (%d files, no native code); it stays in the lock as an sdist, which the first worker that needs it builds into a wheel, once per volume, with [build].requirements (docs/DESIGN.md §5.7)",
				p.Name, p.Version, who, c.Files)
		}
		out = append(out, base)
	}
	return out, nil
}

// groupPhrase is "group a, optional" or "groups a (required), b (optional)".
func groupPhrase(m *manifests.Manifest, groups []string) string {
	var parts []string
	for _, name := range groups {
		kind := "optional"
		if g, ok := m.Group(name); ok && g.Required {
			kind = "required"
		}
		parts = append(parts, name+" ("+kind+")")
	}
	if len(parts) == 1 {
		return "needed by group " + parts[0]
	}
	return "needed by groups " + strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

func groupsRequirements(groups []string) string {
	if len(groups) == 1 {
		return "group " + groups[0] + "'s requirements"
	}
	return "the requirements of group " + groups[0] + " (and " + strings.Join(groups[1:], ", ") + ")"
}

func untilThen(m *manifests.Manifest, groups []string) string {
	var required, optional []string
	for _, name := range groups {
		if g, ok := m.Group(name); ok && g.Required {
			required = append(required, name)
		} else {
			optional = append(optional, name)
		}
	}
	var parts []string
	if len(optional) > 0 {
		parts = append(parts, fmt.Sprintf("Until then %s stays degraded (its sdist is in the lock, so sync reports why)", plural("group", optional)))
	}
	if len(required) > 0 {
		parts = append(parts, fmt.Sprintf("until then %s cannot be installed and sync fails", plural("required group", required)))
	}
	s := strings.Join(parts, "; ")
	if len(parts) > 0 && len(optional) == 0 {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s + "; the rest of the lock is written."
}

func plural(word string, names []string) string {
	if len(names) == 1 {
		return word + " " + names[0]
	}
	return word + "s " + strings.Join(names, ", ")
}

// document assembles the lock.
func (s *session) document(pkgs []Package, locked []manifests.Group, unlocked map[string]reason) *Document {
	m := s.req.Manifest
	p := s.req.Platform
	d := &Document{
		Comments: []string{
			fmt.Sprintf("Made by `volboot lock` from %s (%s): resolved by uv %s for %s.", m.Name, m.File, s.req.UV.Version, p),
			"Each package's marker says which groups install it ('<group>' in dependency_groups).",
			"Do not edit: change the manifest and run `volboot lock` again; `volboot lock --check` tells whether this still matches it.",
		},
		RequiresPython: fmt.Sprintf("==%d.%d.*", p.Major, p.Minor),
		Environments:   []string{fmt.Sprintf("sys_platform == 'linux' and platform_machine == '%s' and implementation_name == 'cpython'", p.Machine)},
		Packages:       pkgs,
		Tool: Tool{
			Resolver:       "uv " + s.req.UV.Version,
			PythonPlatform: PythonPlatform(p),
			PythonVersion:  PythonVersion(p),
		},
	}
	for _, g := range m.Groups {
		d.DependencyGroups = append(d.DependencyGroups, g.Name)
		if g.Required {
			d.DefaultGroups = append(d.DefaultGroups, g.Name)
		}
		var reqs []string
		for _, r := range g.Requirements {
			reqs = append(reqs, r.String())
		}
		d.Tool.Requirements = append(d.Tool.Requirements, GroupRequirements{Group: g.Name, Requirements: reqs})
		if why, ok := unlocked[g.Name]; ok {
			d.Tool.Unlocked = append(d.Tool.Unlocked, Unlocked{Group: g.Name, Reason: why.short})
		}
	}
	d.Tool.Indexes = []string{}
	for _, ix := range m.Indexes {
		d.Tool.Indexes = append(d.Tool.Indexes, ix.URL)
	}
	return d
}

// changes compares the new pins with the previous lock's.
func changes(file string, previous []byte, pkgs []Package) []Change {
	if previous == nil {
		return nil
	}
	old, err := pylock.Parse(file, previous)
	if err != nil {
		return nil
	}
	was := map[string]string{}
	for _, p := range old.Packages {
		was[p.Normalized] = p.Version
	}
	var out []Change
	now := map[string]bool{}
	for _, p := range pkgs {
		now[p.Normalized] = true
		v, ok := was[p.Normalized]
		switch {
		case !ok:
			out = append(out, Change{Package: p.Name, New: p.Version})
		case v != p.Version:
			out = append(out, Change{Package: p.Name, Old: v, New: p.Version})
		}
	}
	for _, p := range old.Packages {
		if !now[p.Normalized] {
			out = append(out, Change{Package: p.Name, Old: p.Version})
			now[p.Normalized] = true
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Package < out[j].Package })
	return out
}

func requirementsOf(groups []manifests.Group) []string {
	seen := map[string]bool{}
	var out []string
	for _, g := range groups {
		for _, r := range g.Requirements {
			line := r.String()
			if !seen[line] {
				seen[line] = true
				out = append(out, line)
			}
		}
	}
	return out
}

func groupNames(groups []manifests.Group) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g.Name)
	}
	return out
}

func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t != "" {
			return t
		}
	}
	return ""
}

// uvFailure is a uv run that exited non-zero.
type uvFailure struct {
	ExitCode int
	Said     string // uv's stderr
}

// Compile describes one `uv pip compile`.
type Compile struct {
	In, Out     string   // file names in the working directory
	Constraints string   // a constraints file, or ""
	Upgrade     []string // --upgrade-package
	// Offline resolves from uv's cache alone: the per-group runs need
	// only what the joint run fetched, and see the index as it did.
	Offline bool
}

// Args are uv's arguments for c, resolving manifest m for platform p.
func (c Compile) Args(m *manifests.Manifest, p manifests.Platform) []string {
	args := []string{"pip", "compile", c.In,
		"--format", "pylock.toml", "-o", c.Out,
		"--python-platform", PythonPlatform(p), "--python-version", PythonVersion(p),
		"--no-header", "--no-config", "--no-progress", "--color", "never"}
	if n := len(m.Indexes); n > 0 {
		// Searched in manifest order: uv's --index entries come before
		// its default index, earlier ones first.
		for _, ix := range m.Indexes[:n-1] {
			args = append(args, "--index", ix.URL)
		}
		args = append(args, "--default-index", m.Indexes[n-1].URL)
	}
	if c.Constraints != "" {
		args = append(args, "--constraints", c.Constraints)
	}
	for _, pkg := range c.Upgrade {
		args = append(args, "--upgrade-package", pkg)
	}
	if c.Offline {
		args = append(args, "--offline")
	}
	return args
}

// compile runs one `uv pip compile` in a directory of its own. prefs puts
// the previous lock where uv reads its pins as preferences.
func (s *session) compile(ctx context.Context, label string, reqs, constraints []string, prefs bool, upgrade []string) ([]Resolved, *uvFailure, error) {
	return s.compileWith(ctx, label, reqs, constraints, prefs, Compile{Upgrade: upgrade})
}

// compileWith is compile with more of uv's options (c's file names are
// set here).
func (s *session) compileWith(ctx context.Context, label string, reqs, constraints []string, prefs bool, c Compile) ([]Resolved, *uvFailure, error) {
	s.mu.Lock()
	s.runs++
	n := s.runs
	s.mu.Unlock()
	dir := filepath.Join(s.dir, fmt.Sprintf("%02d-%s", n, label))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, err
	}
	write := func(name string, lines []string) error {
		return os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
	if err := write("requirements.in", reqs); err != nil {
		return nil, nil, err
	}
	cfile := ""
	if constraints != nil {
		cfile = "constraints.txt"
		if err := write(cfile, constraints); err != nil {
			return nil, nil, err
		}
	}
	const out = "pylock.toml" // uv wants pylock.toml or pylock.<name>.toml
	if prefs && s.req.Previous != nil {
		if err := os.WriteFile(filepath.Join(dir, out), s.req.Previous, 0o644); err != nil {
			return nil, nil, err
		}
	}
	c.In, c.Out, c.Constraints = "requirements.in", out, cfile
	cmd := Command{Path: s.req.UV.Path, Args: c.Args(s.req.Manifest, s.req.Platform), Dir: dir, Env: s.req.Env}
	start := time.Now()
	res, err := s.req.Runner.Run(ctx, cmd)
	s.req.Log.Debug("uv pip compile", zap.String("run", label), zap.Strings("args", cmd.Args), zap.Int("exit", res.ExitCode), zap.Duration("took", time.Since(start)))
	if err != nil {
		return nil, nil, fmt.Errorf("uv: %w", err)
	}
	if res.ExitCode != 0 {
		return nil, &uvFailure{ExitCode: res.ExitCode, Said: string(res.Stderr)}, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, out))
	if err != nil {
		return nil, nil, fmt.Errorf("uv exited 0 but wrote no lock: %w", err)
	}
	pkgs, err := ParseUVLock("uv's "+out+" ("+label+")", data)
	if err != nil {
		return nil, nil, err
	}
	return pkgs, nil, nil
}
