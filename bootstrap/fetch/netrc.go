package fetch

import (
	"fmt"
	"strings"
)

// NetrcMachine is one "machine" (or "default") entry of a netrc file.
type NetrcMachine struct {
	Name     string // empty for the default entry
	Login    string
	Password string
	Account  string
}

// Netrc is a parsed netrc file.
type Netrc struct {
	Machines []NetrcMachine
	Default  *NetrcMachine
}

// Lookup returns the first entry for host (case-insensitive), else the
// default entry.
func (n *Netrc) Lookup(host string) (NetrcMachine, bool) {
	for _, m := range n.Machines {
		if strings.EqualFold(m.Name, host) {
			return m, true
		}
	}
	if n.Default != nil {
		return *n.Default, true
	}
	return NetrcMachine{}, false
}

// ParseNetrc parses the netrc format: whitespace-separated tokens
// "machine NAME", "default", "login X", "password X", "account X" and
// "macdef NAME" (whose body runs to the next empty line and is skipped).
// A token may be double-quoted with backslash escapes (\" \\ \n \r \t); a
// token starting with '#' begins a comment to the end of the line. Errors
// name the line: an unknown keyword, a keyword without its value, a field
// before any machine, anything after "default" other than its fields, or an
// unterminated quote.
func ParseNetrc(data string) (*Netrc, error) {
	lx := &netrcLexer{s: data, line: 1}
	n := &Netrc{}
	var cur *NetrcMachine
	inDefault := false
	flush := func() {
		if cur == nil {
			return
		}
		if inDefault {
			m := *cur
			n.Default = &m
		} else {
			n.Machines = append(n.Machines, *cur)
		}
		cur = nil
	}
	for {
		tok, line, ok, err := lx.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		value := func() (string, error) {
			v, _, ok, err := lx.next()
			if err != nil {
				return "", err
			}
			if !ok {
				return "", fmt.Errorf("line %d: %q needs a value", line, tok)
			}
			return v, nil
		}
		switch tok {
		case "machine":
			if inDefault {
				return nil, fmt.Errorf("line %d: \"machine\" after \"default\" (default must be the last entry)", line)
			}
			flush()
			name, err := value()
			if err != nil {
				return nil, err
			}
			cur = &NetrcMachine{Name: name}
		case "default":
			if inDefault {
				return nil, fmt.Errorf("line %d: second \"default\" entry", line)
			}
			flush()
			inDefault = true
			cur = &NetrcMachine{}
		case "login", "password", "account":
			if cur == nil {
				return nil, fmt.Errorf("line %d: %q before any \"machine\" or \"default\"", line, tok)
			}
			v, err := value()
			if err != nil {
				return nil, err
			}
			switch tok {
			case "login":
				cur.Login = v
			case "password":
				cur.Password = v
			default:
				cur.Account = v
			}
		case "macdef":
			if _, err := value(); err != nil {
				return nil, err
			}
			lx.skipMacro()
		default:
			return nil, fmt.Errorf("line %d: unknown netrc keyword %q (want machine, default, login, password, account or macdef)", line, tok)
		}
	}
	flush()
	return n, nil
}

type netrcLexer struct {
	s    string
	i    int
	line int
}

// next returns the next token and the line it starts on.
func (l *netrcLexer) next() (tok string, line int, ok bool, err error) {
	for l.i < len(l.s) {
		c := l.s[l.i]
		switch {
		case c == '\n':
			l.line++
			l.i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			l.i++
		case c == '#':
			for l.i < len(l.s) && l.s[l.i] != '\n' {
				l.i++
			}
		case c == '"':
			line = l.line
			l.i++
			var b strings.Builder
			for {
				if l.i >= len(l.s) {
					return "", 0, false, fmt.Errorf("line %d: unterminated quoted token", line)
				}
				c := l.s[l.i]
				l.i++
				switch c {
				case '"':
					return b.String(), line, true, nil
				case '\\':
					if l.i >= len(l.s) {
						return "", 0, false, fmt.Errorf("line %d: unterminated quoted token", line)
					}
					e := l.s[l.i]
					l.i++
					switch e {
					case 'n':
						b.WriteByte('\n')
					case 'r':
						b.WriteByte('\r')
					case 't':
						b.WriteByte('\t')
					default:
						if e == '\n' {
							l.line++
						}
						b.WriteByte(e)
					}
				case '\n':
					l.line++
					b.WriteByte(c)
				default:
					b.WriteByte(c)
				}
			}
		default:
			start := l.i
			for l.i < len(l.s) && !isNetrcSpace(l.s[l.i]) {
				l.i++
			}
			return l.s[start:l.i], l.line, true, nil
		}
	}
	return "", 0, false, nil
}

func isNetrcSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// skipMacro skips a macdef body: the rest of the current line, then lines
// up to and including the first empty one.
func (l *netrcLexer) skipMacro() {
	for l.i < len(l.s) && l.s[l.i] != '\n' {
		l.i++
	}
	for l.i < len(l.s) {
		// l.s[l.i] == '\n'
		l.i++
		l.line++
		if l.i >= len(l.s) || l.s[l.i] == '\n' {
			if l.i < len(l.s) {
				l.i++
				l.line++
			}
			return
		}
		for l.i < len(l.s) && l.s[l.i] != '\n' {
			l.i++
		}
	}
}
