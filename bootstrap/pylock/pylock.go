// Package pylock reads PEP 751 lock files (pylock.toml) and selects, for one
// target interpreter and a set of dependency groups, the wheel of every
// package that target needs.
//
// What it accepts: lock-version 1.x (another major is an error, as the PEP
// requires); the top-level keys requires-python, environments, extras,
// dependency-groups, default-groups, created-by, packages and tool; for each
// package name, version, marker, requires-python, index, dependencies,
// wheels, sdist, vcs, directory, archive, attestation-identities and tool.
// Unknown keys are kept out of the way as warnings (a newer 1.x minor may add
// some), not errors.
//
// Where it is stricter than the PEP: every wheel must carry a sha256 hash,
// because volboot names downloads and store entries by it; a wheel's file
// name must agree with its package's name and version; the same holds for
// an sdist (url or path, sha256 required, a .tar.gz, .zip or .tar.bz2 named
// for its package). A package with no wheel for the target but an sdist is
// selected as an sdist to build (Selected.Sdist). One that offers neither
// (only vcs, directory or a non-wheel archive) loads, but selecting it is an
// error naming it.
//
// Errors name the lock file and line.
package pylock

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/tomlpos"
)

// SupportedMajor is the lock-version major this reader understands.
const SupportedMajor = 1

// Lock is a parsed lock file.
type Lock struct {
	File             string // as given to Parse; relative wheel paths resolve against its directory
	Version          string
	RequiresPython   pep440.Specifiers
	Environments     []*pep508.Marker
	Extras           []string
	DependencyGroups []string
	DefaultGroups    []string
	CreatedBy        string
	Packages         []*Package
	Warnings         []string // unknown keys and other things worth a log line
	Digest           string   // sha256 of the document's bytes

	pos *tomlpos.Index
}

// Package is one [[packages]] entry.
type Package struct {
	Name           string // as written
	Normalized     string // PEP 503
	Version        string // as written; may be empty per PEP 751
	Marker         *pep508.Marker
	RequiresPython pep440.Specifiers
	Index          string
	Wheels         []*Wheel
	Sdist          *Sdist   // nil when the package has none
	OtherSources   []string // "vcs", "directory", "archive" present besides wheels and sdist

	path string // tomlpos path, e.g. "packages[3]"
}

// Wheel is one [[packages.wheels]] entry.
type Wheel struct {
	Filename string // the wheel's file name (from name, else the URL or path)
	URL      string
	Path     string // as written; see Lock.WheelPath
	Size     int64  // -1 when the lock does not say
	Hashes   map[string]string
	SHA256   string // lower-case hex
	Parsed   pep425.WheelName

	path string
}

// Sdist is a package's [packages.sdist] table: a source distribution,
// which volboot builds into a wheel when no wheel fits (bootstrap/sdist).
type Sdist struct {
	Filename string // the sdist's file name (from name, else the URL or path)
	URL      string
	Path     string // as written; see Lock.SdistPath
	Size     int64  // -1 when the lock does not say
	Hashes   map[string]string
	SHA256   string // lower-case hex

	path string
}

// SdistFormats are the archive suffixes an sdist may have: PEP 625's
// .tar.gz, and the .zip and .tar.bz2 of older uploads.
var SdistFormats = []string{".tar.gz", ".zip", ".tar.bz2"}

// Ext is the sdist's archive suffix, one of SdistFormats.
func (s *Sdist) Ext() string {
	for _, ext := range SdistFormats {
		if strings.HasSuffix(strings.ToLower(s.Filename), ext) {
			return ext
		}
	}
	return ""
}

// Where returns "file:line" of a package, for messages.
func (l *Lock) Where(p *Package) string { return l.pos.Where(p.path) }

// WhereWheel returns "file:line" of a wheel entry.
func (l *Lock) WhereWheel(w *Wheel) string { return l.pos.Where(w.path) }

// WhereSdist returns "file:line" of an sdist table.
func (l *Lock) WhereSdist(s *Sdist) string { return l.pos.Where(s.path) }

// WheelPath resolves a wheel's path source against the lock's directory.
func (l *Lock) WheelPath(w *Wheel) string { return l.resolve(w.Path) }

// SdistPath resolves an sdist's path source against the lock's directory.
func (l *Lock) SdistPath(s *Sdist) string { return l.resolve(s.Path) }

func (l *Lock) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(l.File), filepath.FromSlash(p))
}

// Load reads and parses the lock file at file.
func Load(file string) (*Lock, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read lock: %w", err)
	}
	return Parse(file, data)
}

// The raw shapes of the document. Tables whose content volboot does not use
// (tool, attestation-identities, dependencies, source details) decode into
// generic values so that any valid content is accepted.
type rawLock struct {
	LockVersion      *string        `toml:"lock-version"`
	RequiresPython   string         `toml:"requires-python"`
	Environments     []string       `toml:"environments"`
	Extras           []string       `toml:"extras"`
	DependencyGroups []string       `toml:"dependency-groups"`
	DefaultGroups    []string       `toml:"default-groups"`
	CreatedBy        string         `toml:"created-by"`
	Packages         []rawPackage   `toml:"packages"`
	Tool             map[string]any `toml:"tool"`
}

type rawPackage struct {
	Name                 string         `toml:"name"`
	Version              string         `toml:"version"`
	Marker               string         `toml:"marker"`
	RequiresPython       string         `toml:"requires-python"`
	Index                string         `toml:"index"`
	Dependencies         []any          `toml:"dependencies"`
	Wheels               []rawWheel     `toml:"wheels"`
	Sdist                *rawWheel      `toml:"sdist"`
	VCS                  map[string]any `toml:"vcs"`
	Directory            map[string]any `toml:"directory"`
	Archive              map[string]any `toml:"archive"`
	AttestationIdentites []any          `toml:"attestation-identities"`
	Tool                 map[string]any `toml:"tool"`
}

type rawWheel struct {
	Name       string            `toml:"name"`
	UploadTime any               `toml:"upload-time"`
	URL        string            `toml:"url"`
	Path       string            `toml:"path"`
	Size       *int64            `toml:"size"`
	Hashes     map[string]string `toml:"hashes"`
}

// Parse parses a lock document; file names it in errors.
func Parse(file string, data []byte) (*Lock, error) {
	pos, err := tomlpos.Build(file, data)
	if err != nil {
		return nil, err
	}
	// Values of the wrong type first, all of them, in words: the
	// decoder would name Go types and stop at the first.
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, decodeError(file, err)
	}
	if err := pos.CheckTypes(doc, reflect.TypeFor[rawLock](), nil); err != nil {
		return nil, err
	}
	var raw rawLock
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var warnings []string
	if err := dec.Decode(&raw); err != nil {
		var sm *toml.StrictMissingError
		if !errors.As(err, &sm) {
			return nil, decodeError(file, err)
		}
		// Unknown keys: the document decoded fine apart from them.
		for _, e := range sm.Errors {
			row, _ := e.Position()
			warnings = append(warnings, fmt.Sprintf("%s:%d: unknown key %q ignored", file, row, strings.Join(e.Key(), ".")))
		}
		raw = rawLock{}
		if err := toml.Unmarshal(data, &raw); err != nil {
			return nil, decodeError(file, err)
		}
	}
	sum := sha256.Sum256(data)
	l := &Lock{File: file, pos: pos, Warnings: warnings, CreatedBy: raw.CreatedBy, Digest: hex.EncodeToString(sum[:])}
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", pos.Where(path), fmt.Sprintf(format, args...)))
	}

	if raw.LockVersion == nil {
		fail("", "lock-version is missing: is this a PEP 751 pylock.toml?")
	} else {
		l.Version = *raw.LockVersion
		major, minor, ok := splitLockVersion(l.Version)
		switch {
		case !ok:
			fail("lock-version", "lock-version %q is not MAJOR.MINOR", l.Version)
		case major != SupportedMajor:
			fail("lock-version", "lock-version %s is not supported (volboot reads %d.x): upgrade volboot or re-lock with a tool writing %d.x", l.Version, SupportedMajor, SupportedMajor)
		case minor > 0:
			l.Warnings = append(l.Warnings, fmt.Sprintf("%s: lock-version %s is newer than 1.0; reading it as 1.0", pos.Where("lock-version"), l.Version))
		}
	}
	if l.RequiresPython, err = pep440.ParseSpecifiers(raw.RequiresPython); err != nil {
		fail("requires-python", "requires-python: %v", err)
	}
	for i, e := range raw.Environments {
		m, err := pep508.ParseMarker(e)
		if err != nil {
			fail(fmt.Sprintf("environments[%d]", i), "environments: %v", err)
			continue
		}
		l.Environments = append(l.Environments, m)
	}
	l.Extras = normalizeAll(raw.Extras)
	l.DependencyGroups = normalizeAll(raw.DependencyGroups)
	l.DefaultGroups = normalizeAll(raw.DefaultGroups)

	for i := range raw.Packages {
		p, perrs := parsePackage(pos, fmt.Sprintf("packages[%d]", i), &raw.Packages[i])
		errs = append(errs, perrs...)
		if p != nil {
			l.Packages = append(l.Packages, p)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

func decodeError(file string, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("%s:%d:%d: %s", file, row, col, de.Error())
	}
	return fmt.Errorf("%s: %w", file, err)
}

func splitLockVersion(v string) (major, minor int, ok bool) {
	a, b, found := strings.Cut(v, ".")
	if !found {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	return major, minor, err1 == nil && err2 == nil && major >= 0 && minor >= 0
}

func normalizeAll(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, pep508.NormalizeName(n))
	}
	return out
}

func parsePackage(pos *tomlpos.Index, at string, r *rawPackage) (*Package, []error) {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", pos.Where(path), fmt.Sprintf(format, args...)))
	}
	p := &Package{Name: r.Name, Version: r.Version, Index: r.Index, path: at}
	if !pep508.ValidName(r.Name) {
		fail(at+".name", "package name %q is not a valid distribution name", r.Name)
		return nil, errs
	}
	p.Normalized = pep508.NormalizeName(r.Name)
	var version pep440.Version
	if r.Version != "" {
		v, err := pep440.Parse(r.Version)
		if err != nil {
			fail(at+".version", "package %s: version: %v", r.Name, err)
		}
		version = v
	}
	if r.Marker != "" {
		m, err := pep508.ParseMarker(r.Marker)
		if err != nil {
			fail(at+".marker", "package %s: marker: %v", r.Name, err)
		}
		p.Marker = m
	}
	var err error
	if p.RequiresPython, err = pep440.ParseSpecifiers(r.RequiresPython); err != nil {
		fail(at+".requires-python", "package %s: requires-python: %v", r.Name, err)
	}
	for kind, present := range map[string]bool{"vcs": r.VCS != nil, "directory": r.Directory != nil, "archive": r.Archive != nil} {
		if present {
			p.OtherSources = append(p.OtherSources, kind)
		}
	}
	sort.Strings(p.OtherSources)
	for i := range r.Wheels {
		wat := fmt.Sprintf("%s.wheels[%d]", at, i)
		w, err := parseWheel(pos, wat, p, version, &r.Wheels[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Wheels = append(p.Wheels, w)
	}
	if r.Sdist != nil {
		sd, err := parseSdist(pos, at+".sdist", p, version, r.Sdist)
		if err != nil {
			errs = append(errs, err)
		} else {
			p.Sdist = sd
		}
	}
	return p, errs
}

func parseWheel(pos *tomlpos.Index, at string, p *Package, version pep440.Version, r *rawWheel) (*Wheel, error) {
	fail := func(path, format string, args ...any) error {
		return fmt.Errorf("%s: package %s: %s", pos.Where(path), p.Name, fmt.Sprintf(format, args...))
	}
	w := &Wheel{URL: r.URL, Path: r.Path, Size: -1, Hashes: r.Hashes, path: at}
	switch {
	case r.URL == "" && r.Path == "":
		return nil, fail(at, "wheel has neither url nor path")
	case r.URL != "":
		u, err := url.Parse(r.URL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fail(at+".url", "wheel url %q is not an absolute URL", r.URL)
		}
	}
	w.Filename = r.Name
	if w.Filename == "" {
		w.Filename = sourceBase(r.URL, r.Path)
	}
	parsed, err := pep425.ParseWheelFilename(w.Filename)
	if err != nil {
		return nil, fail(at, "%v", err)
	}
	w.Parsed = parsed
	if parsed.NormalizedName() != p.Normalized {
		return nil, fail(at, "wheel %s is for %q, not for package %q", w.Filename, parsed.Distribution, p.Name)
	}
	if p.Version != "" {
		wv, err := pep440.Parse(parsed.Version)
		if err != nil || wv.Compare(version) != 0 {
			return nil, fail(at, "wheel %s has version %s, but the package is %s", w.Filename, parsed.Version, p.Version)
		}
	}
	if r.Size != nil {
		if *r.Size < 0 {
			return nil, fail(at+".size", "wheel %s: size %d is negative", w.Filename, *r.Size)
		}
		w.Size = *r.Size
	}
	sum := strings.ToLower(r.Hashes["sha256"])
	if sum == "" {
		return nil, fail(at+".hashes", "wheel %s has no sha256 hash: volboot verifies and names every download by sha256; re-lock with hashes", w.Filename)
	}
	if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return nil, fail(at+".hashes.sha256", "wheel %s: sha256 %q is not 64 hex digits", w.Filename, r.Hashes["sha256"])
	}
	w.SHA256 = sum
	return w, nil
}

// parseSdist checks an sdist table as parseWheel checks a wheel: a url or
// path, a sha256, and a file name that is an archive of this package.
func parseSdist(pos *tomlpos.Index, at string, p *Package, version pep440.Version, r *rawWheel) (*Sdist, error) {
	fail := func(path, format string, args ...any) error {
		return fmt.Errorf("%s: package %s: %s", pos.Where(path), p.Name, fmt.Sprintf(format, args...))
	}
	s := &Sdist{URL: r.URL, Path: r.Path, Size: -1, Hashes: r.Hashes, path: at}
	switch {
	case r.URL == "" && r.Path == "":
		return nil, fail(at, "sdist has neither url nor path")
	case r.URL != "":
		u, err := url.Parse(r.URL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fail(at+".url", "sdist url %q is not an absolute URL", r.URL)
		}
	}
	s.Filename = r.Name
	if s.Filename == "" {
		s.Filename = sourceBase(r.URL, r.Path)
	}
	if s.Filename == "" || strings.ContainsAny(s.Filename, "/\\\x00") {
		return nil, fail(at, "sdist file name %q is not a file name", s.Filename)
	}
	ext := s.Ext()
	if ext == "" {
		return nil, fail(at, "sdist %s is not a %s archive", s.Filename, strings.Join(SdistFormats, ", "))
	}
	if !sdistNameMatches(s.Filename[:len(s.Filename)-len(ext)], p, version) {
		want := p.Name + "-" + p.Version + ext
		if p.Version == "" {
			want = p.Name + "-<version>" + ext
		}
		return nil, fail(at, "sdist %s is not an sdist of package %s %s (want a name like %s)", s.Filename, p.Name, p.Version, want)
	}
	if r.Size != nil {
		if *r.Size < 0 {
			return nil, fail(at+".size", "sdist %s: size %d is negative", s.Filename, *r.Size)
		}
		s.Size = *r.Size
	}
	sum := strings.ToLower(r.Hashes["sha256"])
	if sum == "" {
		return nil, fail(at+".hashes", "sdist %s has no sha256 hash: volboot verifies every download by sha256 and names what it builds by it; re-lock with hashes", s.Filename)
	}
	if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return nil, fail(at+".hashes.sha256", "sdist %s: sha256 %q is not 64 hex digits", s.Filename, r.Hashes["sha256"])
	}
	s.SHA256 = sum
	return s, nil
}

// sdistNameMatches reports whether stem (an sdist's file name without its
// suffix) is "<name>-<version>" for package p: PEP 625's normalized
// spelling or an older one ("antlr4-python3-runtime-4.9.3"), split at any
// hyphen, since names hold hyphens too. A package without a version only
// needs its name.
func sdistNameMatches(stem string, p *Package, version pep440.Version) bool {
	for i := strings.IndexByte(stem, '-'); i > 0; {
		name, ver := stem[:i], stem[i+1:]
		if pep508.NormalizeName(name) == p.Normalized {
			if p.Version == "" {
				return true
			}
			if v, err := pep440.Parse(ver); err == nil && v.Compare(version) == 0 {
				return true
			}
		}
		j := strings.IndexByte(stem[i+1:], '-')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// sourceBase is the file name at the end of a URL or path.
func sourceBase(rawURL, p string) string {
	if rawURL != "" {
		if u, err := url.Parse(rawURL); err == nil {
			if s, err := url.PathUnescape(path.Base(u.Path)); err == nil {
				return s
			}
		}
		return path.Base(rawURL)
	}
	return path.Base(filepath.ToSlash(p))
}
