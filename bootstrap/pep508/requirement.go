package pep508

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/volboot/volboot/bootstrap/pep440"
)

// Requirement is a parsed PEP 508 dependency specifier.
type Requirement struct {
	Name      string   // as written
	Extras    []string // normalized, sorted, without duplicates
	Specifier pep440.Specifiers
	URL       string // for "name @ url"
	Marker    *Marker
}

// ParseRequirement parses a PEP 508 requirement such as
// `torch[cuda]>=2.8,<2.9; python_version >= "3.11"` or
// `pkg @ https://host/pkg-1.0-py3-none-any.whl ; os_name == "posix"`.
// Errors name the input, the column (1-based) and what was expected.
func ParseRequirement(s string) (Requirement, error) {
	r, err := parseRequirement(s)
	if err != nil {
		return Requirement{}, fmt.Errorf("invalid requirement %q: %w", s, err)
	}
	return r, nil
}

// MustParseRequirement is ParseRequirement for constants; it panics on error.
func MustParseRequirement(s string) Requirement {
	r, err := ParseRequirement(s)
	if err != nil {
		panic(err)
	}
	return r
}

func parseRequirement(s string) (Requirement, error) {
	var r Requirement
	p := &parser{src: s}
	p.skipSpace()

	start := p.pos
	for p.pos < len(s) && isNameChar(s[p.pos]) {
		p.pos++
	}
	r.Name = s[start:p.pos]
	if r.Name == "" {
		return r, p.errorf("a project name")
	}
	if !ValidName(r.Name) {
		return r, p.errorAt(start, "a project name of letters, digits and . _ - that starts and ends with a letter or digit")
	}

	p.skipSpace()
	if !p.eof() && s[p.pos] == '[' {
		extras, err := p.extras()
		if err != nil {
			return r, err
		}
		r.Extras = extras
		p.skipSpace()
	}

	switch {
	case p.eof():
		return r, nil
	case s[p.pos] == '@':
		p.pos++
		p.skipSpace()
		ustart := p.pos
		for p.pos < len(s) && s[p.pos] != ' ' && s[p.pos] != '\t' {
			p.pos++
		}
		r.URL = s[ustart:p.pos]
		if r.URL == "" {
			return r, p.errorf("a URL after '@'")
		}
		if err := checkURL(r.URL); err != nil {
			return r, fmt.Errorf("column %d: %w", ustart+1, err)
		}
		p.skipSpace()
		if p.eof() {
			return r, nil
		}
		if s[p.pos] != ';' {
			return r, p.errorf("';' and a marker, or end of requirement, after the URL")
		}
	case s[p.pos] == '(':
		open := p.pos
		end := strings.IndexByte(s[p.pos:], ')')
		if end < 0 {
			return r, fmt.Errorf("%w (to close the parenthesis at column %d)", p.errorAt(len(s), "')'"), open+1)
		}
		if semi := strings.IndexByte(s[p.pos:p.pos+end], ';'); semi >= 0 {
			return r, p.errorAt(p.pos+semi, "')' before the marker")
		}
		spec, err := pep440.ParseSpecifiers(s[p.pos+1 : p.pos+end])
		if err != nil {
			return r, fmt.Errorf("column %d: %w", open+2, err)
		}
		r.Specifier = spec
		p.pos += end + 1
		p.skipSpace()
	case s[p.pos] != ';':
		sstart := p.pos
		end := strings.IndexByte(s[p.pos:], ';')
		if end < 0 {
			end = len(s) - p.pos
		}
		spec, err := pep440.ParseSpecifiers(s[p.pos : p.pos+end])
		if err != nil {
			return r, fmt.Errorf("column %d: %w", sstart+1, err)
		}
		r.Specifier = spec
		p.pos += end
	}

	if p.eof() {
		return r, nil
	}
	if s[p.pos] != ';' {
		return r, p.errorf("';' and a marker, or end of requirement")
	}
	p.pos++
	m, err := p.marker()
	if err != nil {
		return r, err
	}
	p.skipSpace()
	if !p.eof() {
		return r, p.errorf("'and', 'or' or end of marker")
	}
	r.Marker = m
	return r, nil
}

// extras parses "[a, b]" at p.pos.
func (p *parser) extras() ([]string, error) {
	open := p.pos
	p.pos++
	seen := map[string]bool{}
	var out []string
	p.skipSpace()
	if !p.eof() && p.src[p.pos] == ']' {
		p.pos++
		return nil, nil
	}
	for {
		p.skipSpace()
		start := p.pos
		for p.pos < len(p.src) && isNameChar(p.src[p.pos]) {
			p.pos++
		}
		name := p.src[start:p.pos]
		if !ValidName(name) {
			p.pos = start
			return nil, p.errorf("an extra name (letters, digits and . _ -, starting and ending with a letter or digit)")
		}
		if n := NormalizeName(name); !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
		p.skipSpace()
		if p.eof() {
			return nil, fmt.Errorf("%w (to close the bracket at column %d)", p.errorf("',' or ']'"), open+1)
		}
		switch p.src[p.pos] {
		case ',':
			p.pos++
			continue
		case ']':
			p.pos++
			sort.Strings(out)
			return out, nil
		}
		return nil, p.errorf("',' or ']' in the extras list")
	}
}

// checkURL applies packaging's rule: a URL needs a scheme and a host,
// except file: URLs.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %w", raw, err)
	}
	if u.Scheme == "" {
		return fmt.Errorf("invalid URL %q: expected a scheme such as https://", raw)
	}
	if u.Scheme != "file" && u.Host == "" {
		return fmt.Errorf("invalid URL %q: expected a host after %s://", raw, u.Scheme)
	}
	return nil
}

// NormalizedName is the PEP 503 form of r.Name.
func (r Requirement) NormalizedName() string { return NormalizeName(r.Name) }

// String returns the requirement in canonical form:
// name[extras]specifiers; marker, or name[extras] @ url ; marker.
func (r Requirement) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if len(r.Extras) > 0 {
		b.WriteString("[" + strings.Join(r.Extras, ",") + "]")
	}
	b.WriteString(r.Specifier.String())
	if r.URL != "" {
		b.WriteString(" @ " + r.URL)
		if r.Marker != nil {
			b.WriteByte(' ')
		}
	}
	if r.Marker != nil {
		b.WriteString("; " + r.Marker.String())
	}
	return b.String()
}
