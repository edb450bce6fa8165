package lockgen

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
)

// Resolved is one package of a resolution as uv wrote it, checked.
type Resolved struct {
	Name           string // as uv wrote it
	Normalized     string // PEP 503
	Version        string
	Marker         string // uv's environment marker, as written; "" for none
	RequiresPython string
	Index          string
	Sdist          *Artifact
	Wheels         []Artifact
	Archive        *Artifact // a direct URL (name @ https://…)
}

// Artifact is a file of a package: url, size and sha256 are required of
// every artifact volboot writes (an archive's size may be filled in later,
// see fillArchive).
type Artifact struct {
	Name         string
	URL          string
	UploadTime   string // a TOML date-time literal, or ""
	Size         int64  // -1 when uv did not say
	SHA256       string // lower-case hex
	Subdirectory string // archives only
}

// The shape of `uv pip compile --format pylock.toml` output. Decoding is
// strict: a key uv writes that volboot does not carry over is an error,
// not silently dropped from the lock.
type uvDoc struct {
	LockVersion    string      `toml:"lock-version"`
	CreatedBy      string      `toml:"created-by"`
	RequiresPython string      `toml:"requires-python"`
	Packages       []uvPackage `toml:"packages"`
}

type uvPackage struct {
	Name           string         `toml:"name"`
	Version        string         `toml:"version"`
	Marker         string         `toml:"marker"`
	RequiresPython string         `toml:"requires-python"`
	Index          string         `toml:"index"`
	Sdist          *uvArtifact    `toml:"sdist"`
	Wheels         []uvArtifact   `toml:"wheels"`
	Archive        *uvArtifact    `toml:"archive"`
	VCS            map[string]any `toml:"vcs"`
	Directory      map[string]any `toml:"directory"`
}

type uvArtifact struct {
	Name         string            `toml:"name"`
	URL          string            `toml:"url"`
	Path         string            `toml:"path"`
	UploadTime   any               `toml:"upload-time"`
	Size         *int64            `toml:"size"`
	Hashes       map[string]string `toml:"hashes"`
	Subdirectory string            `toml:"subdirectory"`
}

// ParseUVLock reads the pylock.toml uv wrote (file names it in errors)
// and checks what volboot relies on: lock-version 1.x, a valid name and
// version and marker per package, no package twice, and url, size and
// sha256 on every sdist and wheel (an archive may lack its size, which
// volboot measures itself). All problems are reported together.
func ParseUVLock(file string, data []byte) ([]Resolved, error) {
	var doc uvDoc
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			var keys []string
			for _, e := range sm.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%q (line %d)", strings.Join(e.Key(), "."), row))
			}
			return nil, fmt.Errorf("%s: uv wrote keys volboot does not carry into its lock: %s", file, strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %s", file, row, col, de.Error())
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...)))
	}
	if major, _, ok := strings.Cut(doc.LockVersion, "."); !ok || major != "1" {
		fail("lock-version %q: want 1.x", doc.LockVersion)
	}
	seen := map[string]bool{}
	var out []Resolved
	for i, p := range doc.Packages {
		if !pep508.ValidName(p.Name) {
			fail("packages[%d]: name %q is not a valid distribution name", i, p.Name)
			continue
		}
		r := Resolved{Name: p.Name, Normalized: pep508.NormalizeName(p.Name), Version: p.Version, Marker: p.Marker,
			RequiresPython: p.RequiresPython, Index: p.Index}
		if seen[r.Normalized] {
			// uv writes one entry per package for one platform; two would
			// need markers volboot does not compute.
			fail("package %s appears twice", p.Name)
			continue
		}
		seen[r.Normalized] = true
		if _, err := pep440.Parse(p.Version); err != nil {
			fail("package %s: version %q: %v", p.Name, p.Version, err)
		}
		if p.Marker != "" {
			if _, err := pep508.ParseMarker(p.Marker); err != nil {
				fail("package %s: marker: %v", p.Name, err)
			}
		}
		if p.RequiresPython != "" {
			if _, err := pep440.ParseSpecifiers(p.RequiresPython); err != nil {
				fail("package %s: requires-python: %v", p.Name, err)
			}
		}
		if p.VCS != nil || p.Directory != nil {
			kind := "vcs"
			if p.Directory != nil {
				kind = "directory"
			}
			fail("package %s is locked from a %s source, which has no sha256 and size: volboot locks files only; name a wheel or sdist by URL with its sha256 instead", p.Name, kind)
			continue
		}
		if p.Sdist == nil && len(p.Wheels) == 0 && p.Archive == nil {
			fail("package %s has no sdist, wheel or archive", p.Name)
			continue
		}
		check := func(what string, a *uvArtifact, sizeOptional bool) *Artifact {
			art, err := checkArtifact(a, sizeOptional)
			if err != nil {
				fail("package %s %s: %s: %v", p.Name, p.Version, what, err)
				return nil
			}
			return &art
		}
		if p.Sdist != nil {
			r.Sdist = check("sdist", p.Sdist, false)
		}
		for j := range p.Wheels {
			if w := check(fmt.Sprintf("wheel %d", j+1), &p.Wheels[j], false); w != nil {
				r.Wheels = append(r.Wheels, *w)
			}
		}
		if p.Archive != nil {
			r.Archive = check("archive", p.Archive, true)
		}
		out = append(out, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func checkArtifact(a *uvArtifact, sizeOptional bool) (Artifact, error) {
	art := Artifact{Name: a.Name, URL: a.URL, Size: -1, Subdirectory: a.Subdirectory}
	var missing []string
	if a.URL == "" {
		if a.Path != "" {
			return art, fmt.Errorf("a local path (%s), not a URL: a lock for other machines needs URLs", a.Path)
		}
		missing = append(missing, "url")
	} else if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return art, fmt.Errorf("url %q is not an http(s) URL", a.URL)
	}
	if a.Size != nil {
		if *a.Size < 0 {
			return art, fmt.Errorf("size %d is negative", *a.Size)
		}
		art.Size = *a.Size
	} else if !sizeOptional {
		missing = append(missing, "size")
	}
	sum := strings.ToLower(a.Hashes["sha256"])
	if sum == "" {
		missing = append(missing, "sha256")
	} else if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return art, fmt.Errorf("sha256 %q is not 64 hex digits", a.Hashes["sha256"])
	}
	if len(missing) > 0 {
		return art, fmt.Errorf("uv wrote no %s for %s: volboot needs url, size and sha256 of every file it locks", strings.Join(missing, ", "), orUnnamed(a.URL))
	}
	art.SHA256 = sum
	t, err := uploadTime(a.UploadTime)
	if err != nil {
		return art, err
	}
	art.UploadTime = t
	return art, nil
}

// uploadTime renders a decoded TOML date-time back as a TOML literal.
func uploadTime(v any) (string, error) {
	switch t := v.(type) {
	case nil:
		return "", nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case toml.LocalDateTime:
		return t.String(), nil
	case toml.LocalDate:
		return t.String(), nil
	default:
		return "", fmt.Errorf("upload-time %v is not a date-time", v)
	}
}

func orUnnamed(s string) string {
	if s == "" {
		return "a file"
	}
	return s
}
