// Package tomlpos finds the line on which each value of a TOML document is
// written, so that checks made after decoding (a bad specifier, an unknown
// group) can name file:line like the decoder's own errors do.
//
// Paths use dots between keys and [i] for array elements and array-of-tables
// entries: "python.requires", "group[1].requirements[0]", "run.env.F5_MODEL",
// "packages[3].wheels[0].hashes.sha256". Keys are the decoded key text, so a
// quoted key "a.b" is indistinguishable from a dotted one; manifests and locks
// do not use such keys.
package tomlpos

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Index maps value paths of one document to their lines.
type Index struct {
	file  string
	lines map[string]int
	// starts holds the offset at which each line begins: the parser's own
	// Shape scans from the top of the document for every call, which is
	// quadratic on a lock of thousands of values.
	starts []int
}

// Build indexes data, which came from file (the name is only used in
// messages). A document that does not parse yields an error naming
// file:line:column.
func Build(file string, data []byte) (*Index, error) {
	ix := &Index{file: file, lines: map[string]int{}, starts: []int{0}}
	for i, b := range data {
		if b == '\n' {
			ix.starts = append(ix.starts, i+1)
		}
	}
	p := unstable.Parser{}
	p.Reset(data)
	prefix := ""
	arrays := map[string]int{} // array-of-tables path -> index of its last entry
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts := keyParts(e)
			var path string
			if e.Kind == unstable.ArrayTable {
				// The last key names the array itself: step into the
				// arrays above it, then append a new entry.
				path = resolve(arrays, "", parts[:len(parts)-1])
				if path != "" {
					path += "."
				}
				path += parts[len(parts)-1]
				arrays[path]++
				path = fmt.Sprintf("%s[%d]", path, arrays[path]-1)
			} else {
				path = resolve(arrays, "", parts)
			}
			prefix = path
			ix.lines[path] = ix.lineOf(firstKey(e))
		case unstable.KeyValue:
			ix.keyValue(&p, arrays, prefix, e)
		}
	}
	if err := p.Error(); err != nil {
		if perr, ok := err.(*unstable.ParserError); ok && len(perr.Highlight) > 0 {
			sh := p.Shape(p.Range(perr.Highlight))
			return nil, fmt.Errorf("%s:%d:%d: %s", file, sh.Start.Line, sh.Start.Column, perr.Message)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return ix, nil
}

func firstKey(n *unstable.Node) *unstable.Node {
	it := n.Key()
	if !it.Next() {
		return nil
	}
	return it.Node()
}

func keyParts(n *unstable.Node) []string {
	var parts []string
	it := n.Key()
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// resolve joins key parts onto base, stepping into the last entry of every
// array of tables on the way, as TOML does for [a.b] after [[a]].
func resolve(arrays map[string]int, base string, parts []string) string {
	path := base
	for _, k := range parts {
		if path != "" {
			path += "."
		}
		path += k
		if n, ok := arrays[path]; ok {
			path = fmt.Sprintf("%s[%d]", path, n-1)
		}
	}
	return path
}

func (ix *Index) keyValue(p *unstable.Parser, arrays map[string]int, prefix string, kv *unstable.Node) {
	path := resolve(arrays, prefix, keyParts(kv))
	line := ix.lineOf(firstKey(kv))
	ix.lines[path] = line
	ix.value(p, arrays, path, kv.Value(), line)
}

func (ix *Index) value(p *unstable.Parser, arrays map[string]int, path string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			el := it.Node()
			elPath := path + "[" + strconv.Itoa(i) + "]"
			elLine := ix.lineOf(el)
			if elLine == 0 {
				elLine = line
			}
			ix.lines[elPath] = elLine
			ix.value(p, arrays, elPath, el, elLine)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if it.Node().Kind == unstable.KeyValue {
				ix.keyValue(p, arrays, path, it.Node())
			}
		}
	}
}

func (ix *Index) lineOf(n *unstable.Node) int {
	if n == nil || n.Raw.Length == 0 {
		return 0
	}
	off := int(n.Raw.Offset)
	return sort.Search(len(ix.starts), func(i int) bool { return ix.starts[i] > off })
}

// File is the name Build was given.
func (ix *Index) File() string { return ix.file }

// Line returns the line of path, or of its nearest written ancestor, or 0
// when nothing on the way is written in the document (a default value).
func (ix *Index) Line(path string) int {
	for path != "" {
		if l, ok := ix.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// Where formats "file:line" for path ("file" alone when the line is unknown).
func (ix *Index) Where(path string) string {
	if l := ix.Line(path); l > 0 {
		return ix.file + ":" + strconv.Itoa(l)
	}
	return ix.file
}
