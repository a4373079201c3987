package function

import (
	"strings"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// DefaultNamespace holds the functions of admin keys (and of a server run
// with --insecure-no-auth) that name no other namespace. It always exists
// and cannot be created or removed.
const DefaultNamespace = "default"

// A function is known across the node by its reference: its name in the
// default namespace, "name.namespace" in any other (OpenFaaS's form, so
// /function/hello.team-a works as it does there). Names and namespaces
// cannot hold a dot, so a reference is never ambiguous, and it is safe as a
// cgroup, file or metric label name.

// Ref returns the reference of function name in namespace ns.
func Ref(ns, name string) string {
	if ns == "" || ns == DefaultNamespace {
		return name
	}
	return name + "." + ns
}

// SplitRef returns the namespace and name of a reference.
func SplitRef(ref string) (ns, name string) {
	if name, ns, ok := strings.Cut(ref, "."); ok {
		return ns, name
	}
	return DefaultNamespace, ref
}

// StoredNamespace is the form records keep a namespace in: "" for the
// default namespace (so records made before namespaces existed need no
// rewrite), the name for any other. NamespaceOf is its inverse.
func StoredNamespace(ns string) string {
	if ns == DefaultNamespace {
		return ""
	}
	return ns
}

// NamespaceOf returns ns, or DefaultNamespace for "".
func NamespaceOf(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// ValidateNamespace checks a namespace name: a DNS label, like function
// names, and not the reserved default.
func ValidateNamespace(ns string) error {
	hint := "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	switch {
	case ns == "":
		return errdefs.Invalidf("give the namespace a name, like team-a", "namespace name is required")
	case ns == DefaultNamespace:
		return errdefs.Invalidf("choose another name; the default namespace always exists",
			"namespace %q is reserved", ns)
	case !nameRE.MatchString(ns):
		return errdefs.Invalidf(hint, "%q is not a valid namespace name", ns)
	}
	return nil
}

// ValidName reports whether s is a valid function, namespace or trigger
// name: a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending
// with '-').
func ValidName(s string) bool { return nameRE.MatchString(s) }
