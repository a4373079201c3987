package function

import (
	"encoding/json"
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// EnvList is a function's environment as NAME=value entries. A spec may
// write it as a list (["NAME=value"], seed 003's form) or as a mapping
// ({NAME: value}, OpenFaaS's form); a mapping is sorted by name.
type EnvList []string

// UnmarshalYAML accepts a sequence of NAME=value strings or a mapping.
func (e *EnvList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return envShapeError()
		}
		*e = l
		return nil
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return envShapeError()
		}
		*e = fromMap(m)
		return nil
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*e = nil
			return nil
		}
	}
	return envShapeError()
}

// UnmarshalJSON accepts an array of NAME=value strings or an object.
func (e *EnvList) UnmarshalJSON(b []byte) error {
	var l []string
	if err := json.Unmarshal(b, &l); err == nil {
		*e = l
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return envShapeError()
	}
	*e = fromMap(m)
	return nil
}

func fromMap(m map[string]string) EnvList {
	l := make(EnvList, 0, len(m))
	for k, v := range m {
		l = append(l, k+"="+v)
	}
	slices.Sort(l)
	return l
}

func envShapeError() error {
	return errdefs.Invalidf(`write a list (environment: ["NAME=value"]) or a mapping (environment: {NAME: value}) of strings`,
		"field environment: %s", "neither a list of NAME=value strings nor a mapping of names to strings")
}

// fieldTypeError turns yaml's "cannot unmarshal !!str `abc` into int" on a
// line into an error that names the field, when the line is a top-level key.
func fieldTypeError(te *yaml.TypeError, probe map[string]yaml.Node) (error, bool) {
	for _, msg := range te.Errors {
		var line int
		if _, err := fmt.Sscanf(msg, "line %d:", &line); err != nil {
			continue
		}
		for k, v := range probe {
			if v.Line == line {
				return errdefs.Invalidf("see the function spec reference in the README",
					"field %s: wrong type (%s)", k, msg), true
			}
		}
	}
	return nil, false
}
