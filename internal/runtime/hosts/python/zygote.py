# wisp zygote for Python handlers (Python 3.11+, stdlib only; Linux).
#
#   python3 -B -S zygote.py        (as root, fd 3: the control socket)
#
# A zygote is a Python runtime started ahead of demand: interpreter up,
# host.py and the standard modules it uses imported, ctypes and libc
# loaded, the seccomp filter received. For each cold start the worker asks
# it to fork a child straight into a fresh sandbox; the child then runs
# host.py's serve loop, so a cold start costs a clone, a few mounts and the
# handler's import instead of an interpreter start.
#
# The zygote runs as root with every capability, inside a mount namespace
# of its own whose root the sandbox init already assembled (read-only binds
# of /usr, /lib*, /etc..., /wisp, a minimal /dev). Each child is cloned with
# new PID, mount, IPC, UTS and network namespaces in the same clone(2), and
# before it runs a line of the function's code it has: a fresh /proc, its
# own size-limited /tmp and /dev/shm, the function's code at /code (a
# detached read-only mount tree the worker made with open_tree(2)), its
# hostname, lo up, an unprivileged uid and gid with no supplementary groups,
# an empty capability bounding set, no_new_privs and the seccomp filters.
# It is born in its own cgroup (v2) or joins it first thing (v1); the
# worker sends the load frame with the fork request, and the child reads it
# only once all of the above is done.
#
# Control protocol (SOCK_SEQPACKET, one JSON object per message):
#   worker -> zygote  {"init": {"seccomp": [base64 BPF, ...], "sys": {...}}}
#   zygote -> worker  {"ready": true, "pid": N, "init_ms": F}
#   worker -> zygote  {"fork": {...}} with SCM_RIGHTS fds
#                     [request r, response w, stdout w, stderr w, code tree,
#                      then the cgroup: its directory ("join": "clone3", v2)
#                      or its cgroup.procs files ("join": "procs", v1)]
#   zygote -> worker  {"forked": PID, "clone_us": F} or {"error": "..."}
#   worker -> zygote  {"kill": PID}
#   zygote -> worker  {"exit": PID, "status": WAITSTATUS}   (any time)
# The zygote exits when the worker closes the socket; its children get
# SIGKILL when it dies (parent-death signal).

import ctypes
import fcntl
import gc
import importlib.util
import json
import os
import select
import signal
import socket
import struct
import sys
import time

_T0 = time.perf_counter()

# Modules handlers and the host commonly reach for on their first call:
# imported here once, shared copy-on-write by every child.
import traceback  # noqa: E402,F401  (failed calls format tracebacks)
import urllib.parse  # noqa: E402,F401  (req.query)

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("wisp_host", os.path.join(_HERE, "host.py"))
host = importlib.util.module_from_spec(_spec)
sys.modules["wisp_host"] = host
_spec.loader.exec_module(host)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

# Linux constants (the same on x86-64 and arm64). System call numbers come
# from the worker, which knows its architecture's.
CLONE_NEWNS = 0x00020000
CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MNT_DETACH = 2
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
RLIMIT_CORE = 4


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


class _CloneArgs(ctypes.Structure):
    # struct clone_args, CLONE_ARGS_SIZE_VER2 (Linux 5.7+).
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


class _SetupError(Exception):
    pass


def _check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        raise _SetupError("%s: %s" % (what, os.strerror(e)))
    return ret


class Zygote:
    def __init__(self, ctl):
        self.ctl = ctl
        self.filters = []  # (fprog, buffer) pairs, built once
        self.sys = {}
        self.cap_last = 40
        self.pid = os.getpid()
        self.children = set()
        # The children's lifeline: they hold the read end and see it hang
        # up when the zygote is gone (see _child).
        self.life_r, self.life_w = map(_high, os.pipe2(os.O_CLOEXEC))

    def init(self, msg):
        import base64  # only here, once

        self.sys = msg["sys"]
        for b64 in msg.get("seccomp") or []:
            prog = base64.b64decode(b64)
            buf = ctypes.create_string_buffer(prog, len(prog))
            self.filters.append((_SockFprog(len(prog) // 8, ctypes.addressof(buf)), buf))
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                self.cap_last = int(f.read())
        except (OSError, ValueError):
            pass  # dropping until EINVAL covers kernels with more

    def send(self, msg):
        self.ctl.send(json.dumps(msg, separators=(",", ":")).encode())

    def serve(self):
        r, w = map(_high, os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        poll = select.poll()
        poll.register(self.ctl.fileno(), select.POLLIN)
        poll.register(r, select.POLLIN)
        self.wake = (r, w)
        # Everything a child inherits is in place: take it out of the
        # collector's view, so children do not dirty (copy) the pages of
        # objects that live as long as they do.
        gc.collect()
        gc.freeze()
        self.send({"ready": True, "pid": self.pid, "init_ms": (time.perf_counter() - _T0) * 1000})
        while True:
            for fd, _ in poll.poll():
                if fd == r:
                    try:
                        while os.read(r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                msg, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 16)
                if not msg:
                    return  # the worker closed the control socket
                try:
                    self.handle(json.loads(msg), fds)
                finally:
                    for f in fds:
                        try:
                            os.close(f)
                        except OSError:
                            pass

    def handle(self, msg, fds):
        if "fork" in msg:
            self.fork(msg["fork"], fds)
        elif "kill" in msg:
            pid = msg["kill"]
            if pid in self.children:  # not reaped yet: the pid is still this child
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "status": status})

    def fork(self, req, fds):
        seq = req.get("seq")
        join = req.get("join")
        want = 6 if join == "clone3" else 5
        if len(fds) < want or (join == "procs" and len(fds) == 5):
            self.send({"error": "fork: want %d descriptors or more, got %d" % (want, len(fds)), "seq": seq})
            return
        # Nothing buffered may be written twice (once by each process).
        for s in (sys.__stdout__, sys.__stderr__):
            s.flush()
        t0 = time.perf_counter()
        # The raw system call, not os.fork(): it creates the namespaces in
        # the same clone and skips CPython's after-fork work (about 3 ms of
        # lock re-initialisation and at-fork hooks), which this
        # single-threaded zygote does not need. On cgroup v2 the child is
        # created inside its cgroup (clone3, CLONE_INTO_CGROUP), so nothing
        # it does is charged elsewhere and no migration is needed.
        if join == "clone3":
            args = _CloneArgs(flags=req["flags"] | CLONE_INTO_CGROUP, exit_signal=SIGCHLD, cgroup=fds[5])
            pid = _syscall(self.sys["clone3"], ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
        else:
            pid = _syscall(self.sys["clone"], req["flags"] | SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            code = 1
            try:
                code = self.child(req, fds)
            finally:
                os._exit(code)
        clone_us = (time.perf_counter() - t0) * 1e6
        if pid < 0:
            self.send({"error": "clone: " + os.strerror(ctypes.get_errno()), "seq": seq})
            return
        self.children.add(pid)
        self.send({"forked": pid, "clone_us": clone_us, "seq": seq})

    def child(self, req, fds):
        """Turns the new process into the sandbox and serves the function.
        Runs as root until dropPrivileges' equivalent below; the function's
        code runs only after the load frame, which the worker sends once
        this process is in its cgroup."""
        self.resp_fd = fds[1]
        try:
            self.setup(req, fds)
        except BaseException as e:
            msg = "set up sandbox %s: %s" % (req.get("id", ""), e)
            _write_frame(self.resp_fd, {"ready": False, "error": msg})
            sys.__stderr__.write("wisp zygote: %s\n" % msg)
            sys.__stderr__.flush()
            return 1
        channel = host.open_channel()
        if channel is None:
            return 2
        signal.signal(signal.SIGTERM, lambda signum, frame: host._exit(0))
        code_dir, handler_file, t_load = host.await_load(channel, announce=False)
        host.run(channel, code_dir, handler_file, t_load)
        return 0

    def setup(self, req, fds):
        if req.get("join") == "procs":
            # cgroup v1: join the group (in every hierarchy) before anything
            # else; "0" is the writer itself.
            for fd in fds[5:]:
                os.write(fd, b"0")
        _check(_prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "set parent death signal")
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

        # Descriptors: the channel at 3 and 4, stdout and stderr, the code
        # tree at 5 until it is mounted, the zygote's lifeline at 6.
        # Everything else of the zygote (its control socket above all) is
        # closed.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1024) for fd in list(fds[:5]) + [self.life_r]]
        for fd, target in zip(high, (3, 4, 1, 2, 5, 6)):
            os.dup2(fd, target)
        self.resp_fd = 4
        os.closerange(7, 1 << 30)
        code_fd, life = 5, 6

        flags = req["flags"]
        # Private already (inherited from the zygote's root); made so again
        # in case the zygote's mounts ever change.
        _check(_mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
        # The zygote's own /code, /proc (of the host's PID namespace), /tmp
        # and /dev/shm go, rather than stay hidden under the child's.
        for p in (b"/code", b"/proc", b"/tmp", b"/dev/shm"):
            _check(_umount2(p, MNT_DETACH), "unmount the zygote's " + p.decode())
        _check(_syscall(self.sys["move_mount"], code_fd, b"", AT_FDCWD, b"/code", MOVE_MOUNT_F_EMPTY_PATH),
               "mount /code")
        os.close(code_fd)
        if flags & 0x20000000:  # CLONE_NEWPID: a /proc of this namespace only
            _check(_mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
        tmp = int(req["tmp_size"])
        _check(_mount(b"wisp-tmp", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV,
                      b"size=%d,mode=1777" % tmp), "mount /tmp")
        _check(_mount(b"wisp-shm", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      b"size=%d,mode=1777" % int(req["shm_size"])), "mount /dev/shm")
        if flags & 0x04000000:  # CLONE_NEWUTS
            name = req["hostname"].encode()
            _check(_libc.sethostname(name, len(name)), "set hostname")
        if flags & 0x40000000:  # CLONE_NEWNET
            _loopback_up()

        # Credentials, as the Go init's dropPrivileges does.
        for c in range(self.cap_last + 1):
            _check(_prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "drop capability %d from the bounding set" % c)
        _check(_libc.setrlimit(RLIMIT_CORE, ctypes.byref(_Rlimit(0, 0))), "setrlimit core")
        os.setgroups([])
        os.setgid(req["gid"])
        os.setuid(req["uid"])
        _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
        # setuid cleared the parent-death signal: arm it again, then make
        # sure the zygote did not die in between (the lifeline's only
        # writer is the zygote, so it hangs up when the zygote is gone).
        _check(_prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "set parent death signal")
        p = select.poll()
        p.register(life, select.POLLIN)
        if p.poll(0):
            raise _SetupError("zygote went away")
        os.close(life)
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
        if req.get("seccomp"):
            for fprog, _ in self.filters:
                _check(_syscall(self.sys["seccomp"], SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
                                ctypes.byref(fprog)), "install seccomp filter")
        os.chdir("/")
        # What the zygote had seeded is shared by every child: reseed.
        rnd = sys.modules.get("random")
        if rnd is not None:
            rnd.seed()


def _high(fd):
    """Moves a descriptor of the zygote's own to 100 or above, out of the
    way of those fork requests bring in (see Zygote.setup)."""
    hi = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return hi


def _loopback_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    except OSError as e:
        raise _SetupError("bring up lo: %s" % e.strerror) from None
    finally:
        s.close()


def _write_frame(fd, header):
    h = json.dumps(header).encode()
    try:
        os.write(fd, struct.pack(">II", len(h), 0) + h)
    except OSError:
        pass


def main():
    try:
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=_high(3))
    except OSError as e:
        sys.stderr.write("wisp zygote: control socket at fd 3: %s\n" % e)
        return 2
    z = Zygote(ctl)
    msg = ctl.recv(1 << 20)
    if not msg:
        return 0
    z.init(json.loads(msg)["init"])
    z.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
