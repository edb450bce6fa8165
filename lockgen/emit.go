package lockgen

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Document is the lock volboot writes: uv's packages with volboot's group
// markers, and what the lock was made from under [tool.volboot].
type Document struct {
	Comments         []string // header lines, without "# "
	RequiresPython   string
	Environments     []string
	DependencyGroups []string
	DefaultGroups    []string
	Packages         []Package
	Tool             Tool
}

// Package is one [[packages]] entry of the written lock.
type Package struct {
	Resolved
	Marker string // the final marker: uv's, combined with the groups
	Groups []string
}

// Tool is [tool.volboot]: what `volboot lock --check` compares with the
// manifest to tell a lock that no longer matches it.
type Tool struct {
	Resolver       string // "uv 0.13.9"
	PythonPlatform string // uv's --python-platform
	PythonVersion  string // uv's --python-version
	Indexes        []string
	Requirements   []GroupRequirements // manifest order
	Unlocked       []Unlocked
}

// GroupRequirements are a group's requirements as the manifest had them.
type GroupRequirements struct {
	Group        string
	Requirements []string
}

// Unlocked is a group the lock leaves out, and why.
type Unlocked struct {
	Group  string
	Reason string
}

// Encode renders the document as TOML (PEP 751).
func (d *Document) Encode() []byte {
	var b strings.Builder
	for _, c := range d.Comments {
		b.WriteString(strings.TrimRight("# "+oneLine(c), " ") + "\n")
	}
	b.WriteString("lock-version = \"1.0\"\n")
	b.WriteString("created-by = \"volboot\"\n")
	if d.RequiresPython != "" {
		fmt.Fprintf(&b, "requires-python = %s\n", quote(d.RequiresPython))
	}
	if len(d.Environments) > 0 {
		fmt.Fprintf(&b, "environments = %s\n", quoteList(d.Environments))
	}
	fmt.Fprintf(&b, "dependency-groups = %s\n", quoteList(d.DependencyGroups))
	fmt.Fprintf(&b, "default-groups = %s\n", quoteList(d.DefaultGroups))
	for _, p := range d.Packages {
		b.WriteString("\n[[packages]]\n")
		fmt.Fprintf(&b, "name = %s\n", quote(p.Name))
		if p.Version != "" {
			fmt.Fprintf(&b, "version = %s\n", quote(p.Version))
		}
		if p.Marker != "" {
			fmt.Fprintf(&b, "marker = %s\n", quote(p.Marker))
		}
		if p.RequiresPython != "" {
			fmt.Fprintf(&b, "requires-python = %s\n", quote(p.RequiresPython))
		}
		if p.Index != "" {
			fmt.Fprintf(&b, "index = %s\n", quote(p.Index))
		}
		if p.Archive != nil {
			fmt.Fprintf(&b, "archive = %s\n", p.Archive.inline(true))
		}
		if p.Sdist != nil {
			fmt.Fprintf(&b, "sdist = %s\n", p.Sdist.inline(false))
		}
		if len(p.Wheels) > 0 {
			b.WriteString("wheels = [\n")
			for _, w := range p.Wheels {
				fmt.Fprintf(&b, "    %s,\n", w.inline(false))
			}
			b.WriteString("]\n")
		}
	}
	t := d.Tool
	b.WriteString("\n[tool.volboot]\n")
	fmt.Fprintf(&b, "resolver = %s\n", quote(t.Resolver))
	fmt.Fprintf(&b, "python-platform = %s\n", quote(t.PythonPlatform))
	fmt.Fprintf(&b, "python-version = %s\n", quote(t.PythonVersion))
	fmt.Fprintf(&b, "indexes = %s\n", quoteList(t.Indexes))
	b.WriteString("\n[tool.volboot.requirements]\n")
	for _, g := range t.Requirements {
		fmt.Fprintf(&b, "%s = %s\n", quote(g.Group), quoteList(g.Requirements))
	}
	for _, u := range t.Unlocked {
		b.WriteString("\n[[tool.volboot.unlocked]]\n")
		fmt.Fprintf(&b, "group = %s\n", quote(u.Group))
		fmt.Fprintf(&b, "reason = %s\n", quote(u.Reason))
	}
	return []byte(b.String())
}

// inline renders an artifact as a TOML inline table.
func (a *Artifact) inline(archive bool) string {
	var kv []string
	if a.Name != "" {
		kv = append(kv, "name = "+quote(a.Name))
	}
	kv = append(kv, "url = "+quote(a.URL))
	if a.UploadTime != "" {
		kv = append(kv, "upload-time = "+a.UploadTime)
	}
	if a.Size >= 0 {
		kv = append(kv, "size = "+strconv.FormatInt(a.Size, 10))
	}
	kv = append(kv, "hashes = { sha256 = "+quote(a.SHA256)+" }")
	if archive && a.Subdirectory != "" {
		kv = append(kv, "subdirectory = "+quote(a.Subdirectory))
	}
	return "{ " + strings.Join(kv, ", ") + " }"
}

// quote renders s as a TOML basic string.
func quote(s string) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// oneLine keeps a comment on its line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}

// PEP751Name reports whether base is a file name PEP 751 allows for a lock:
// pylock.toml, or pylock.<name>.toml with a non-empty name without dots.
// uv and pip refuse to read a lock by any other name; volboot does not mind.
func PEP751Name(base string) bool {
	if base == "pylock.toml" {
		return true
	}
	name, ok := strings.CutPrefix(base, "pylock.")
	if !ok {
		return false
	}
	name, ok = strings.CutSuffix(name, ".toml")
	return ok && name != "" && !strings.Contains(name, ".")
}
