package pep508

import (
	"fmt"
	"strings"

	"github.com/volboot/volboot/bootstrap/pep440"
)

// Environment is what markers are evaluated against.
type Environment struct {
	// Values holds the PEP 508 variables: os_name, sys_platform,
	// platform_machine, platform_python_implementation, platform_release,
	// platform_system, platform_version, python_version,
	// python_full_version, implementation_name, implementation_version and
	// extra. A missing "extra" is ""; any other missing variable that a
	// marker uses is an evaluation error.
	Values map[string]string
	// Extras is the PEP 751 `extras` set (names, normalized on comparison).
	Extras []string
	// DependencyGroups is the PEP 751 `dependency_groups` set.
	DependencyGroups []string
}

// Marker is a parsed environment marker. A nil *Marker is the absent
// marker: it evaluates true and prints as "".
type Marker struct {
	root *node
}

// node is either a boolean combination (op "and"/"or" with at least two
// kids, never a kid of the same op: the parser flattens those) or a
// comparison (op "").
type node struct {
	op   string
	kids []*node
	cmp  comparison
}

type comparison struct {
	lhs, rhs operand
	op       string // === == ~= != <= >= < > in "not in"
}

type operand struct {
	variable bool
	value    string // canonical variable name, or the literal's text
}

// markerVariables maps every accepted spelling to the canonical name.
var markerVariables = map[string]string{
	"os_name": "os_name", "os.name": "os_name",
	"sys_platform": "sys_platform", "sys.platform": "sys_platform",
	"platform_machine": "platform_machine", "platform.machine": "platform_machine",
	"platform_python_implementation": "platform_python_implementation",
	"platform.python_implementation": "platform_python_implementation",
	"python_implementation":          "platform_python_implementation",
	"platform_release":               "platform_release",
	"platform_system":                "platform_system",
	"platform_version":               "platform_version", "platform.version": "platform_version",
	"python_version":         "python_version",
	"python_full_version":    "python_full_version",
	"implementation_name":    "implementation_name",
	"implementation_version": "implementation_version",
	"extra":                  "extra",
	"extras":                 "extras",
	"dependency_groups":      "dependency_groups",
}

// ParseMarker parses a PEP 508 marker expression such as
// `python_version >= "3.11" and 'asr' in dependency_groups`. Errors name
// the column (1-based) and what was expected there.
func ParseMarker(s string) (*Marker, error) {
	p := &parser{src: s}
	m, err := p.marker()
	if err != nil {
		return nil, fmt.Errorf("invalid marker %q: %w", s, err)
	}
	p.skipSpace()
	if !p.eof() {
		return nil, fmt.Errorf("invalid marker %q: %w", s, p.errorf("'and', 'or' or end of marker"))
	}
	return m, nil
}

// MustParseMarker is ParseMarker for constants; it panics on error.
func MustParseMarker(s string) *Marker {
	m, err := ParseMarker(s)
	if err != nil {
		panic(err)
	}
	return m
}

// parser is a recursive-descent parser over src; pos is a byte offset and
// base is added to columns in errors (for markers inside requirements).
type parser struct {
	src  string
	pos  int
	base int
}

func (p *parser) eof() bool { return p.pos >= len(p.src) }

func (p *parser) skipSpace() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
}

// errorf reports what was expected at the current position.
func (p *parser) errorf(expected string) error {
	return p.errorAt(p.pos, expected)
}

func (p *parser) errorAt(pos int, expected string) error {
	found := "end of input"
	if pos < len(p.src) {
		r := p.src[pos:]
		if len(r) > 12 {
			r = r[:12] + "..."
		}
		found = fmt.Sprintf("%q", r)
	}
	return fmt.Errorf("column %d: expected %s, found %s", p.base+pos+1, expected, found)
}

// keyword reports whether word starts at pos and is not followed by a
// character that would continue an identifier.
func (p *parser) keyword(word string) bool {
	if !strings.HasPrefix(p.src[p.pos:], word) {
		return false
	}
	end := p.pos + len(word)
	return end == len(p.src) || !isNameChar(p.src[end])
}

func (p *parser) marker() (*Marker, error) {
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	return &Marker{root: n}, nil
}

func (p *parser) or() (*node, error) {
	return p.chain("or", p.and)
}

func (p *parser) and() (*node, error) {
	return p.chain("and", p.atom)
}

// chain parses operand (op operand)* and flattens nested nodes of the same op.
func (p *parser) chain(op string, operand func() (*node, error)) (*node, error) {
	var kids []*node
	for {
		n, err := operand()
		if err != nil {
			return nil, err
		}
		if n.op == op {
			kids = append(kids, n.kids...)
		} else {
			kids = append(kids, n)
		}
		p.skipSpace()
		if !p.keyword(op) {
			break
		}
		p.pos += len(op)
	}
	if len(kids) == 1 {
		return kids[0], nil
	}
	return &node{op: op, kids: kids}, nil
}

func (p *parser) atom() (*node, error) {
	p.skipSpace()
	if !p.eof() && p.src[p.pos] == '(' {
		open := p.pos
		p.pos++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.eof() || p.src[p.pos] != ')' {
			return nil, fmt.Errorf("%w (to close the parenthesis at column %d)",
				p.errorf("')', 'and' or 'or'"), p.base+open+1)
		}
		p.pos++
		return n, nil
	}
	lhs, err := p.operand()
	if err != nil {
		return nil, err
	}
	op, err := p.operator()
	if err != nil {
		return nil, err
	}
	rhs, err := p.operand()
	if err != nil {
		return nil, err
	}
	return &node{cmp: comparison{lhs: lhs, op: op, rhs: rhs}}, nil
}

func (p *parser) operand() (operand, error) {
	p.skipSpace()
	if p.eof() {
		return operand{}, p.errorf("a marker variable or a quoted string")
	}
	c := p.src[p.pos]
	if c == '\'' || c == '"' {
		end := strings.IndexByte(p.src[p.pos+1:], c)
		if end < 0 {
			return operand{}, p.errorf("a closing " + string(c) + " for this string")
		}
		v := p.src[p.pos+1 : p.pos+1+end]
		p.pos += end + 2
		return operand{value: v}, nil
	}
	start := p.pos
	for p.pos < len(p.src) && isNameChar(p.src[p.pos]) {
		p.pos++
	}
	name, ok := markerVariables[p.src[start:p.pos]]
	if !ok {
		p.pos = start
		return operand{}, p.errorf("a marker variable (python_version, sys_platform, extra, ...) or a quoted string")
	}
	return operand{variable: true, value: name}, nil
}

func (p *parser) operator() (string, error) {
	p.skipSpace()
	for _, op := range []string{"===", "==", "~=", "!=", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(p.src[p.pos:], op) {
			p.pos += len(op)
			return op, nil
		}
	}
	if p.keyword("in") {
		p.pos += 2
		return "in", nil
	}
	if p.keyword("not") {
		save := p.pos
		p.pos += 3
		ws := p.pos
		p.skipSpace()
		if p.pos > ws && p.keyword("in") {
			p.pos += 2
			return "not in", nil
		}
		p.pos = save
	}
	return "", p.errorf("a comparison operator (== != < <= > >= ~= === in 'not in')")
}

// String returns the marker in canonical form: canonical variable names,
// double-quoted literals (single-quoted when the value holds a double
// quote), and parentheses only where "or" nests inside "and".
func (m *Marker) String() string {
	if m == nil || m.root == nil {
		return ""
	}
	var b strings.Builder
	m.root.format(&b, false)
	return b.String()
}

func (n *node) format(b *strings.Builder, paren bool) {
	if n.op == "" {
		n.cmp.lhs.format(b)
		b.WriteString(" " + n.cmp.op + " ")
		n.cmp.rhs.format(b)
		return
	}
	if paren {
		b.WriteByte('(')
	}
	for i, k := range n.kids {
		if i > 0 {
			b.WriteString(" " + n.op + " ")
		}
		k.format(b, n.op == "and" && k.op == "or")
	}
	if paren {
		b.WriteByte(')')
	}
}

func (o operand) format(b *strings.Builder) {
	switch {
	case o.variable:
		b.WriteString(o.value)
	case strings.Contains(o.value, `"`):
		b.WriteString("'" + o.value + "'")
	default:
		b.WriteString(`"` + o.value + `"`)
	}
}

// Evaluate reports whether the marker holds in env. A nil marker holds.
// Every comparison is evaluated (no short-circuit), so an error such as a
// variable missing from env is reported however the other clauses turn out.
func (m *Marker) Evaluate(env Environment) (bool, error) {
	if m == nil || m.root == nil {
		return true, nil
	}
	ok, err := m.root.eval(env)
	if err != nil {
		return false, fmt.Errorf("evaluating marker %q: %w", m.String(), err)
	}
	return ok, nil
}

func (n *node) eval(env Environment) (bool, error) {
	if n.op == "" {
		return n.cmp.eval(env)
	}
	result := n.op == "and"
	for _, k := range n.kids {
		ok, err := k.eval(env)
		if err != nil {
			return false, err
		}
		if n.op == "and" {
			result = result && ok
		} else {
			result = result || ok
		}
	}
	return result, nil
}

// value is a resolved operand: a string, or a set for extras/dependency_groups.
type value struct {
	str   string
	set   []string
	isSet bool
}

func (o operand) resolve(env Environment) (value, error) {
	if !o.variable {
		return value{str: o.value}, nil
	}
	switch o.value {
	case "extras":
		return value{set: env.Extras, isSet: true}, nil
	case "dependency_groups":
		return value{set: env.DependencyGroups, isSet: true}, nil
	}
	v, ok := env.Values[o.value]
	if !ok {
		if o.value == "extra" {
			return value{}, nil
		}
		return value{}, fmt.Errorf("variable %s is not set in the environment", o.value)
	}
	return value{str: v}, nil
}

func (c comparison) eval(env Environment) (bool, error) {
	l, err := c.lhs.resolve(env)
	if err != nil {
		return false, err
	}
	r, err := c.rhs.resolve(env)
	if err != nil {
		return false, err
	}
	if l.isSet {
		return false, fmt.Errorf("%s is a set and can only appear on the right of 'in' or 'not in'", c.lhs.value)
	}
	if r.isSet {
		if c.op != "in" && c.op != "not in" {
			return false, fmt.Errorf("%s is a set: only 'in' and 'not in' apply, not %q", c.rhs.value, c.op)
		}
		want := NormalizeName(l.str)
		found := false
		for _, e := range r.set {
			if NormalizeName(e) == want {
				found = true
				break
			}
		}
		return found == (c.op == "in"), nil
	}
	ls, rs := l.str, r.str
	if (c.lhs.variable && c.lhs.value == "extra") || (c.rhs.variable && c.rhs.value == "extra") {
		ls, rs = NormalizeName(ls), NormalizeName(rs)
	}
	return compare(ls, c.op, rs)
}

// compare applies op to two strings: as PEP 440 when rhs makes a valid
// specifier with op and lhs is a valid version, else as Python string
// comparison when op has one; otherwise it is an error.
func compare(lhs, op, rhs string) (bool, error) {
	if op != "in" && op != "not in" {
		if spec, err := pep440.ParseSpecifier(op + rhs); err == nil {
			if op == "===" {
				s := lhs
				if v, err := pep440.Parse(lhs); err == nil {
					s = v.String()
				}
				return strings.EqualFold(s, spec.Version), nil
			}
			if v, err := pep440.Parse(lhs); err == nil {
				return spec.Match(v), nil
			}
		}
	}
	switch op {
	case "==":
		return lhs == rhs, nil
	case "!=":
		return lhs != rhs, nil
	case "<":
		return lhs < rhs, nil
	case "<=":
		return lhs <= rhs, nil
	case ">":
		return lhs > rhs, nil
	case ">=":
		return lhs >= rhs, nil
	case "in":
		return strings.Contains(rhs, lhs), nil
	case "not in":
		return !strings.Contains(rhs, lhs), nil
	}
	return false, fmt.Errorf("cannot compare %q %s %q: not valid PEP 440 versions, and %s has no string meaning", lhs, op, rhs, op)
}
