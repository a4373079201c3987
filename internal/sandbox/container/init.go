package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/runtime"
)

// InitArg is the hidden first argument that turns the wisp binary into a
// container's entry shim. The backend mounts the binary at /wisp/init and
// starts every container with it; MaybeRunInit looks for it.
const InitArg = "__wisp-container-init"

// Paths inside every container.
const (
	shimPath    = runtime.SandboxRuntimeDir + "/init" // the wisp binary, read-only
	channelDir  = "/run/wisp"                         // the instance directory, read-only
	channelSock = channelDir + "/chan"                // the worker's listening socket
)

// shimConfig is what the shim does once the channel is connected: exec
// Argv (python and node hosts), or serve Exec itself (exec functions).
type shimConfig struct {
	Argv []string            `json:"argv,omitempty"`
	Exec *runtime.ExecConfig `json:"exec,omitempty"`
}

// MaybeRunInit runs the container entry shim and never returns when this
// process was started as one (os.Args[1] == InitArg); otherwise it returns
// at once. Call it first thing in main, and in TestMain of every test
// binary that starts containers.
func MaybeRunInit() {
	if len(os.Args) < 3 || os.Args[1] != InitArg {
		return
	}
	os.Exit(runShim(os.Args[2]))
}

// runShim connects the channel and runs the runtime host. containerd
// gives a task only stdio, so the channel is handed over the instance's
// unix socket, bind-mounted at /run/wisp: the shim connects once and
// receives two pipe ends (SCM_RIGHTS), the host's fd 3 (requests) and fd 4
// (responses), exactly the pipes process mode hands its hosts.
//
// The shim stays PID 1 of the container, like an init: it forks the host
// (the Go runtime's own descriptors may sit at 3 and 4, so they cannot be
// rearranged in this process before an exec; the child does it between
// fork and exec), forwards termination signals to it, reaps orphans, and
// exits with the host's status. Exec functions are served by the shim
// itself.
func runShim(arg string) int {
	var cfg shimConfig
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "wisp container init: bad configuration: %v\n", err)
		return 2
	}
	fds, err := receiveChannel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wisp container init: connect channel: %v\n", err)
		return 1
	}
	if cfg.Exec != nil {
		return serveExec(cfg.Exec, fds)
	}
	if len(cfg.Argv) == 0 {
		fmt.Fprintln(os.Stderr, "wisp container init: nothing to run")
		return 2
	}
	return runHost(cfg.Argv, fds)
}

// runHost forks the host with the channel at fd 3 and 4 and waits for it.
func runHost(argv []string, fds [2]int) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2, uintptr(fds[0]), uintptr(fds[1])},
	})
	// Only the host holds the channel from now on: its death is the
	// worker's end of file.
	unix.Close(fds[0])
	unix.Close(fds[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "wisp container init: start %s: %v\n", argv[0], err)
		return 1
	}
	for {
		for {
			var ws unix.WaitStatus
			p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || p <= 0 {
				break
			}
			if p != pid {
				continue // an orphan the host left
			}
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
		if sig := <-sigs; sig != syscall.SIGCHLD {
			_ = syscall.Kill(pid, sig.(syscall.Signal))
		}
	}
}

// receiveChannel connects to the worker's socket and receives the two pipe
// ends of the channel.
func receiveChannel() ([2]int, error) {
	var fds [2]int
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fds, err
	}
	defer unix.Close(s)
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: channelSock}); err != nil {
		return fds, err
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(2*4))
	_, oobn, _, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fds, fmt.Errorf("receive the channel: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fds, fmt.Errorf("receive the channel: no descriptors (%v)", err)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 2 {
		for _, fd := range got {
			unix.Close(fd)
		}
		return fds, fmt.Errorf("receive the channel: want 2 descriptors, got %d (%v)", len(got), err)
	}
	return [2]int{got[0], got[1]}, nil
}

// serveExec keeps the shim resident as the exec runtime host, PID 1 of the
// container, reaping the orphans handlers leave.
func serveExec(cfg *runtime.ExecConfig, fds [2]int) int {
	// The channel is the shim's alone: a handler that inherited it could
	// read other calls' requests or forge their responses.
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	// Out of reach of the handlers it runs (same uid): no /proc/1/mem.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	stop := runtime.ReapOrphans()
	defer stop()
	in := os.NewFile(uintptr(fds[0]), "request")
	out := os.NewFile(uintptr(fds[1]), "response")
	if err := runtime.ServeExec(context.Background(), in, out, *cfg); err != nil {
		fmt.Fprintf(os.Stderr, "wisp exec host: %v\n", err)
		return 1
	}
	return 0
}

// listenChannel makes the instance's socket in dir, connectable by the
// container's uid only through its bind mount.
func listenChannel(dir string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dir + "/chan", Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("channel socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(dir+"/chan", 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("channel socket: %w", err)
	}
	return ln, nil
}
