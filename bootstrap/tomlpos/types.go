package tomlpos

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// CheckTypes compares a decoded document (toml.Unmarshal into a map) with
// the fields of the struct type t its decoder fills (keys from the toml
// tags) and returns one error per value of the wrong type, in document
// order, each naming file:line, the key path (with the name of the entry
// of an array of tables it sits in, by its name, repo or url key) and the
// type wanted in words. The decoder's own message would name Go types
// ("manifests.rawGroup.Required of type bool") and stop at the first.
// want gives the words for types of its own (a duration kept as a string
// type of its own, say); fields of interface type, and keys t lacks, are
// left to the decoder.
func (pos *Index) CheckTypes(doc map[string]any, t reflect.Type, want map[reflect.Type]string) error {
	c := &typeChecker{pos: pos, want: want}
	c.fields("", "", t, doc)
	sort.SliceStable(c.errs, func(i, j int) bool { return c.errs[i].line < c.errs[j].line })
	errs := make([]error, 0, len(c.errs))
	for _, e := range c.errs {
		errs = append(errs, errors.New(e.msg))
	}
	return errors.Join(errs...)
}

type typeError struct {
	line int
	msg  string
}

type typeChecker struct {
	pos  *Index
	want map[reflect.Type]string
	errs []typeError
}

// fields checks the keys of table m against the struct type t. A key that
// matches a field's only when case is ignored is an error of its own: the
// decoder would take it for that field (it falls back to a case-blind
// match), so "pYthon = []" would reach it and be reported in Go's terms.
func (c *typeChecker) fields(path, entry string, t reflect.Type, m map[string]any) {
	keys := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		keys[key] = true
		if v, ok := m[key]; ok {
			c.value(join(path, key), entry, f.Type, v)
		}
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if keys[k] {
			continue
		}
		for want := range keys {
			if strings.EqualFold(k, want) {
				at := join(path, k)
				c.errs = append(c.errs, typeError{line: c.pos.Line(at),
					msg: fmt.Sprintf("%s: %s: keys are case-sensitive: write %q", c.pos.Where(at), at, want)})
			}
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// value checks v, found at path, against the Go type t of its field.
func (c *typeChecker) value(path, entry string, t reflect.Type, v any) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			want := "a string in quotes"
			if w, ok := c.want[t]; ok {
				want = w
			}
			c.fail(path, entry, want, v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.fail(path, entry, "true or false", v)
		}
	case reflect.Int, reflect.Int64:
		if _, ok := v.(int64); !ok {
			c.fail(path, entry, "a whole number, such as 5", v)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			c.fail(path, entry, `a table of strings, such as { NAME = "value" }`, v)
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c.value(path+"."+k, entry, t.Elem(), m[k])
		}
	case reflect.Slice:
		list, ok := v.([]any)
		el := t.Elem()
		if el.Kind() == reflect.Struct {
			if !ok {
				c.fail(path, entry, "tables, each written [["+path+"]]", v)
				return
			}
			for i, e := range list {
				at := fmt.Sprintf("%s[%d]", path, i)
				m, ok := e.(map[string]any)
				if !ok {
					c.fail(at, entry, "a table, written [["+path+"]]", e)
					continue
				}
				c.fields(at, entryName(path, m), el, m)
			}
			return
		}
		if !ok {
			c.fail(path, entry, `a list of strings, such as ["a", "b"]`, v)
			return
		}
		for i, e := range list {
			c.value(fmt.Sprintf("%s[%d]", path, i), entry, el, e)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.fail(path, entry, "a table, written ["+path+"]", v)
			return
		}
		c.fields(path, entry, t, m)
	default:
		// A field of a kind this checker does not know: the decoder
		// judges it, as before.
	}
}

// entryName names an entry of an array of tables for messages, as
// `group "tts"`, by the first of its name, repo or url that is a string.
func entryName(array string, m map[string]any) string {
	for _, k := range []string{"name", "repo", "url"} {
		if s, ok := m[k].(string); ok {
			return fmt.Sprintf("%s %q", array, s)
		}
	}
	return ""
}

func (c *typeChecker) fail(path, entry, want string, got any) {
	where := c.pos.Where(path)
	line := c.pos.Line(path)
	if line == 0 {
		// [[run]] where [run] was meant: the line is the first entry's.
		where, line = c.pos.Where(path+"[0]"), c.pos.Line(path+"[0]")
	}
	at := path
	if entry != "" {
		at += " (" + entry + ")"
	}
	msg := fmt.Sprintf("%s: %s: must be %s, not %s", where, at, want, describe(got))
	if _, isString := got.(string); isString && (want == "true or false" || strings.HasPrefix(want, "a whole number")) {
		msg += " (write it without quotes)"
	}
	c.errs = append(c.errs, typeError{line: line, msg: msg})
}

// describe says in words what a decoded TOML value is.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		if r := []rune(v); len(r) > 40 {
			v = string(r[:37]) + "..."
		}
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprint(v)
	case int64:
		return fmt.Sprintf("the number %d", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "a date or time"
	}
	return "a value of another type"
}
