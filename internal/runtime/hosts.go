package runtime

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// hostFiles holds the interpreted hosts: hosts/python/host.py and
// hosts/node/host.js. The exec host is Go (ServeExec).
//
//go:embed hosts
var hostFiles embed.FS

// Files returns the embedded runtime hosts, rooted so that python/host.py and
// node/host.js are at the top (the layout Extract writes), for backends that
// build images or initramfs instead of extracting to a directory.
func Files() fs.FS {
	sub, err := fs.Sub(hostFiles, "hosts")
	if err != nil {
		return hostFiles // unreachable: "hosts" is a valid path
	}
	return sub
}

// Host script paths relative to the runtime directory.
const (
	PythonHost = "python/host.py"
	NodeHost   = "node/host.js"
)

// Extract writes the runtime hosts into dir (dir/python/host.py,
// dir/node/host.js): directories 0755, files 0644. Files whose content is
// already right are left alone; others are written to a temporary file and
// renamed into place, so a host starting concurrently never sees a partial
// file and concurrent Extracts are safe.
func Extract(dir string) error {
	root := Files()
	return fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("extract runtime hosts: %w", err)
			}
			// MkdirAll is subject to the umask, and dir may predate us.
			if err := os.Chmod(dst, 0o755); err != nil {
				return fmt.Errorf("extract runtime hosts: %w", err)
			}
			return nil
		}
		want, err := fs.ReadFile(root, p)
		if err != nil {
			return fmt.Errorf("extract runtime hosts: %w", err)
		}
		if err := writeIfChanged(dst, want); err != nil {
			return fmt.Errorf("extract runtime hosts: %w", err)
		}
		return nil
	})
}

func writeIfChanged(dst string, want []byte) error {
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm() == 0o644 && st.Mode().IsRegular() {
			return nil
		}
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(want)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// Launcher knows where the interpreters are. Paths are absolute host paths
// that backends also expose inside sandboxes (Debian's /usr/bin), never a
// PATH lookup: a user's pyenv or nvm shim must not decide what runs.
type Launcher struct {
	// Python is the interpreter for runtime "python3". A versioned runtime
	// ("python3.11") runs the binary of that name in the same directory
	// (/usr/bin/python3.11).
	Python string
	// Node is the interpreter for "node" and "nodeN". Its version is not
	// checked against N; name a specific binary in Runtimes for that.
	Node string
	// Runtimes overrides the interpreter per exact runtime name, e.g.
	// {"python3.12": "/opt/python3.12/bin/python3", "node18": "/opt/node18/bin/node"}.
	Runtimes map[string]string
}

// DefaultLauncher returns the Debian paths: /usr/bin/python3, /usr/bin/node.
func DefaultLauncher() Launcher {
	return Launcher{Python: "/usr/bin/python3", Node: "/usr/bin/node"}
}

// Interpreter returns the interpreter for a runtime name (python3,
// python3.11, node, node20). An interpreter that is not installed is an
// errdefs.ErrUnavailable error whose hint names the Debian package. exec has
// no interpreter ("", nil).
func (l Launcher) Interpreter(runtime string) (string, error) {
	var bin, pkg string
	switch function.Family(runtime) {
	case function.RuntimeExec:
		return "", nil
	case function.RuntimePython:
		bin = orDefault(l.Python, "/usr/bin/python3")
		if runtime != function.RuntimePython {
			bin = filepath.Join(filepath.Dir(bin), runtime)
		}
		pkg = runtime
	case function.RuntimeNode:
		bin, pkg = orDefault(l.Node, "/usr/bin/node"), "nodejs"
	default:
		return "", errdefs.Invalidf("use one of python3, python3.11, node, exec", "unknown runtime %q", runtime)
	}
	if p, ok := l.Runtimes[runtime]; ok && p != "" {
		bin = p
	}
	st, err := os.Stat(bin)
	if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return "", errdefs.New(errdefs.ErrUnavailable, "apt-get install "+pkg,
			"runtime %s: interpreter %s is not installed", runtime, bin)
	}
	return bin, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Command returns the argv that starts the runtime host for spec, with the
// function's code at codeDir and the extracted hosts at runtimeDir (inside a
// sandbox: SandboxCodeDir and SandboxRuntimeDir):
//
//	/usr/bin/python3 -B -S RUNTIME/python/host.py CODE HANDLER
//	/usr/bin/node RUNTIME/node/host.js CODE HANDLER
//
// For exec it returns (nil, nil): the sandbox's init process serves the
// channel itself with ServeExec.
func (l Launcher) Command(spec *function.Spec, codeDir, runtimeDir string) ([]string, error) {
	bin, err := l.Interpreter(spec.Runtime)
	if err != nil {
		return nil, fmt.Errorf("function %q: %w", spec.Name, err)
	}
	switch function.Family(spec.Runtime) {
	case function.RuntimePython:
		// -B: code is read-only, never write bytecode; -S: skip site (the
		// host adds Debian's dist-packages itself), ~10 ms of every cold start.
		return []string{bin, "-B", "-S", path.Join(runtimeDir, PythonHost), codeDir, spec.Handler}, nil
	case function.RuntimeNode:
		return []string{bin, path.Join(runtimeDir, NodeHost), codeDir, spec.Handler}, nil
	}
	return nil, nil
}

// Command is DefaultLauncher().Command.
func Command(spec *function.Spec, codeDir, runtimeDir string) ([]string, error) {
	return DefaultLauncher().Command(spec, codeDir, runtimeDir)
}

// BaseEnv is the environment every host starts from: PATH of
// function.ExecPath, HOME=/tmp, LANG=C.UTF-8.
func BaseEnv() []string {
	return []string{"PATH=" + strings.Join(function.ExecPath(), ":"), "HOME=/tmp", "LANG=C.UTF-8"}
}

// HostEnv returns the environment of a runtime host: a fixed base (PATH of
// function.ExecPath, HOME=/tmp, LANG=C.UTF-8), then the function's
// environment, then the WISP_* settings the host reads, which the function
// cannot override. logLimit 0 means DefaultLogLimit.
func HostEnv(spec *function.Spec, logLimit int) []string {
	if logLimit <= 0 {
		logLimit = DefaultLogLimit
	}
	env := append(BaseEnv(), spec.Environment...)
	env = append(env,
		"WISP_FUNCTION="+spec.Name,
		EnvConcurrency+"="+strconv.Itoa(max(spec.Concurrency, 1)),
		EnvLogLimit+"="+strconv.Itoa(logLimit),
	)
	return env
}

// NewExecConfig returns the ServeExec configuration for an exec function
// whose code is at codeDir (SandboxCodeDir inside a sandbox). The handler
// field is split on spaces into argv; the environment is HostEnv's.
func NewExecConfig(spec *function.Spec, codeDir string, logLimit int) (ExecConfig, error) {
	argv := strings.Fields(spec.Handler)
	if len(argv) == 0 {
		return ExecConfig{}, errdefs.Invalidf("name the command to run, like ./handler.sh", "function %q: exec handler is empty", spec.Name)
	}
	return ExecConfig{
		Argv:        argv,
		Dir:         codeDir,
		Env:         HostEnv(spec, logLimit),
		Concurrency: max(spec.Concurrency, 1),
		LogLimit:    logLimit,
		ContentType: spec.Env()["content_type"],
	}, nil
}
