package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// maxFileSize bounds the config file; a real one is a few kilobytes.
const maxFileSize = 1 << 20

// Load reads the YAML file at path over Default and validates the result.
// Errors wrap errdefs.ErrInvalid (or ErrNotFound for a missing file) and
// name the file, the line and the key.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, errdefs.New(errdefs.ErrNotFound,
				"check the path, or leave out --config to run with the defaults",
				"config file %s does not exist", path)
		}
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return Config{}, errdefs.Invalidf("a wisp config file is a few kilobytes; check the path",
			"config %s is larger than 1Mi", path)
	}
	return Parse(path, data)
}

// Parse decodes data (the contents of the file called name, used in
// messages) over Default and validates the result. An empty document yields
// Default().
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, errdefs.Invalidf("check the YAML syntax (indentation, quotes, colons)",
			"config %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	lines := map[string]int{}
	if len(doc.Content) > 0 {
		if err := check(doc.Content[0], reflect.TypeFor[Config](), "", lines, nil); err != nil {
			var ce *checkError
			if errors.As(err, &ce) {
				return Config{}, errdefs.Invalidf(ce.hint, "config %s line %d: %s", name, ce.line, ce.msg)
			}
			return Config{}, fmt.Errorf("config %s: %w", name, err)
		}
		// check accepted the shape of every key and value; now decode for
		// real, with yaml.v3's own guard against unknown fields as well.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, errdefs.Invalidf("see the configuration reference in the README",
				"config %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	if err := cfg.Validate(); err != nil {
		var ke *keyError
		var de *errdefs.Error
		if errors.As(err, &ke) && errors.As(err, &de) {
			where := "config " + name
			if line, ok := lineOf(lines, ke.key); ok {
				where += fmt.Sprintf(" line %d", line)
			}
			return Config{}, errdefs.Invalidf(de.Fix, "%s: %s", where, de.Msg)
		}
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, nil
}

// lineOf finds the line of key, or of the nearest enclosing key present in
// the file ("process.namespace_types[2]", then "process.namespace_types",
// then "process").
func lineOf(lines map[string]int, key string) (int, bool) {
	for key != "" {
		if l, ok := lines[key]; ok {
			return l, true
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0, false
}

// checkError is a problem found by check at a line of the file.
type checkError struct {
	line      int
	msg, hint string
}

func (e *checkError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// check walks node against the struct type t, the way yaml.v3 will decode
// it, and reports the first unknown or repeated key, or value that does not
// decode, with its line. It records the line of every key it meets in lines
// ("execution.max_queue", "process.namespace_types[1]"). active holds the
// mappings being checked, to catch merge keys that refer to themselves.
func check(n *yaml.Node, t reflect.Type, prefix string, lines map[string]int, active map[*yaml.Node]bool) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if active[n] {
		return &checkError{line: n.Line, msg: "a merge key (<<) refers to the mapping that contains it",
			hint: "merge another anchor, or write the keys out"}
	}
	if active == nil {
		active = map[*yaml.Node]bool{}
	}
	active[n] = true
	defer delete(active, n)
	section := strings.TrimSuffix(prefix, ".")
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // "execution:" with nothing under it keeps the defaults
	}
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if section != "" {
			what = section
		}
		return &checkError{line: n.Line, msg: fmt.Sprintf("%s must be a mapping of keys to values", what),
			hint: "indent the keys under their section, as in the configuration reference"}
	}
	fields := map[string]reflect.StructField{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		fields[name] = f
		names = append(names, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			if err := checkMerge(v, t, prefix, lines, active); err != nil {
				return err
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return &checkError{line: k.Line, msg: "keys must be plain names", hint: "see the configuration reference in the README"}
		}
		f, ok := fields[k.Value]
		if !ok {
			return unknownField(k, section, names)
		}
		key := prefix + k.Value
		if seen[k.Value] {
			return &checkError{line: k.Line, msg: fmt.Sprintf("%s is set twice", key),
				hint: fmt.Sprintf("keep one %s", k.Value)}
		}
		seen[k.Value] = true
		lines[key] = k.Line
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
			if err := check(v, f.Type, key+".", lines, active); err != nil {
				return err
			}
			continue
		}
		if v.Kind == yaml.SequenceNode {
			for j, e := range v.Content {
				lines[fmt.Sprintf("%s[%d]", key, j)] = e.Line
			}
		}
		if err := v.Decode(reflect.New(f.Type).Interface()); err != nil {
			return &checkError{line: v.Line, msg: fmt.Sprintf("%s: %s", key, decodeMessage(err)),
				hint: fmt.Sprintf("see %s in the configuration reference", key)}
		}
	}
	return nil
}

// checkMerge checks the value of a "<<" merge key: a mapping, or a list of
// them.
func checkMerge(v *yaml.Node, t reflect.Type, prefix string, lines map[string]int, active map[*yaml.Node]bool) error {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			if err := check(e, t, prefix, lines, active); err != nil {
				return err
			}
		}
		return nil
	}
	return check(v, t, prefix, lines, active)
}

func unknownField(k *yaml.Node, section string, names []string) error {
	what := "section"
	msg := fmt.Sprintf("unknown section %q", k.Value)
	if section != "" {
		what = "field"
		msg = fmt.Sprintf("unknown field %q in %s", k.Value, section)
	}
	hint := fmt.Sprintf("the %ss are %s", what, strings.Join(names, ", "))
	if section != "" {
		hint = fmt.Sprintf("the fields of %s are %s", section, strings.Join(names, ", "))
	}
	if s := suggest(k.Value, names); s != "" {
		hint = fmt.Sprintf("did you mean %q? %s", s, hint)
	}
	return &checkError{line: k.Line, msg: msg, hint: hint}
}

var linePrefixRE = regexp.MustCompile(`^line [0-9]+: `)

// decodeMessage turns a decode error into a short sentence without the
// line, which the caller puts in front.
func decodeMessage(err error) string {
	m := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		m = te.Errors[0] // "line 3: cannot unmarshal !!str `abc` into int"
	}
	return linePrefixRE.ReplaceAllString(m, "")
}

// suggest returns the name closest to s when it is a plausible typo.
func suggest(s string, names []string) string {
	best, bestD := "", len(s)/3+2
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	for _, n := range sorted {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
