# wisp runtime host for Python handlers (Python 3.11+, stdlib only).
#
#   python3 -B host.py CODE_DIR HANDLER_FILE
#
# Reads request frames on fd 3 and writes response frames on fd 4. A frame
# is: uint32 big-endian header length, uint32 big-endian body length, the
# JSON header, the raw body. The first frame out is the ready frame, sent
# once the handler module is imported (or failed to import). See
# internal/runtime/protocol.go for the header fields.
#
# Environment: WISP_CONCURRENCY (calls served at once; a thread pool for a
# sync handle), WISP_LOG_LIMIT (bytes of captured output kept per call).
#
# The handler is `def handle(req)` or `async def handle(req)`. It returns
# str, bytes, dict, list, None, (status, body) or (status, headers, body).
# What it prints during a call comes back with that call's response; what is
# printed outside calls (at import) goes to the instance's stdout/stderr.

import collections.abc
import contextvars
import importlib.util
import json
import os
import signal
import struct
import sys
import threading
import time

_T0 = time.perf_counter()
_perf = time.perf_counter
_PREFIX = struct.Struct(">II")
_HOST_FILE = os.path.abspath(__file__)


def _int_env(name, default):
    try:
        return max(1, int(os.environ.get(name) or default))
    except ValueError:
        return default


_LOG_LIMIT = _int_env("WISP_LOG_LIMIT", 64 << 10)
_CONCURRENCY = _int_env("WISP_CONCURRENCY", 1)
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_TEXT = "text/plain; charset=utf-8"
_BINARY = "application/octet-stream"
_JSON = "application/json"

# The log buffer of the call running in this thread or asyncio task.
_call_logs = contextvars.ContextVar("wisp_call_logs", default=None)


class _Logs:
    """One call's captured output: keeps about the first `limit` bytes."""

    __slots__ = ("parts", "size", "dropped", "limit")

    def __init__(self, limit):
        self.parts = []
        self.size = 0  # characters kept; a character is at least one byte
        self.dropped = 0  # bytes not kept
        self.limit = limit

    def write(self, s):
        if self.size < self.limit:
            self.parts.append(s)
            self.size += len(s)
        else:
            self.dropped += len(s.encode("utf-8", "replace"))

    def finish(self, tail=""):
        """The call's logs: head of the output, truncation marker, tail
        (the traceback), within about `limit` bytes."""
        out = "".join(self.parts).encode("utf-8", "replace")
        tail_b = tail.encode("utf-8", "replace")
        limit = self.limit
        if len(tail_b) > limit // 2 and len(out) + len(tail_b) > limit:
            cut = len(tail_b) - max(limit // 2, limit - len(out))
            tail_b = b"...[truncated %d bytes]\n" % cut + tail_b[cut:]
        dropped = self.dropped
        keep = max(0, limit - len(tail_b))
        if len(out) > keep:
            dropped += len(out) - keep
            out = out[:keep]
        text = out.decode("utf-8", "ignore")
        if dropped:
            text += "\n...[truncated %d bytes]\n" % dropped
        return text + tail_b.decode("utf-8", "ignore")


class _BinaryCapture:
    """sys.stdout.buffer during calls."""

    def __init__(self, text):
        self._text = text

    def write(self, b):
        logs = _call_logs.get()
        if logs is None:
            return self._text._real.buffer.write(b)
        logs.write(bytes(b).decode("utf-8", "replace"))
        return len(b)

    def flush(self):
        if _call_logs.get() is None:
            self._text._real.buffer.flush()

    def __getattr__(self, name):
        return getattr(self._text._real.buffer, name)


class _Capture:
    """Stands in for sys.stdout/sys.stderr: writes made during a call go to
    that call's logs (per thread and per asyncio task, through a context
    variable); other writes go to the real stream."""

    def __init__(self, real):
        self._real = real
        self.buffer = _BinaryCapture(self)

    def write(self, s):
        logs = _call_logs.get()
        if logs is None:
            return self._real.write(s)
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        logs.write(s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if _call_logs.get() is None:
            self._real.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):  # encoding, errors, fileno, ...
        return getattr(self._real, name)


class Headers(collections.abc.Mapping):
    """The request headers, case-insensitive. h["content-type"] is the first
    value of that header; h.get_all(name) lists every value. Iterating
    yields lower-case names."""

    __slots__ = ("_raw", "_lower")

    def __init__(self, raw):
        self._raw = raw or {}
        self._lower = None

    def _map(self):
        m = self._lower
        if m is None:
            m = self._lower = {k.lower(): v for k, v in self._raw.items()}
        return m

    def __getitem__(self, name):
        values = self._map()[name.lower()]
        return values[0] if values else ""

    def get_all(self, name):
        return list(self._map().get(name.lower(), ()))

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._map()

    def __iter__(self):
        return iter(self._map())

    def __len__(self):
        return len(self._map())

    def __repr__(self):
        return "Headers(%r)" % dict(self.items())


_UNSET = object()


class Request:
    """One call. body is bytes; json() parses it (None when empty);
    text is the body decoded as UTF-8; query holds the first value of each
    query parameter, query_string the raw string."""

    __slots__ = ("id", "activation_id", "method", "path", "query_string",
                 "headers", "body", "timeout_ms", "_json", "_query")

    def __init__(self, h, body):
        self.id = h.get("id", "")
        self.activation_id = h.get("activation_id", "")
        self.method = h.get("method") or "GET"
        self.path = h.get("path") or "/"
        self.query_string = h.get("query") or ""
        self.headers = Headers(h.get("headers"))
        self.timeout_ms = h.get("timeout_ms") or 0
        self.body = body
        self._json = _UNSET
        self._query = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is _UNSET:
            self._json = json.loads(self.body) if self.body else None
        return self._json

    @property
    def query(self):
        if self._query is None:
            from urllib.parse import parse_qs  # imported on first use: cold starts skip it

            q = parse_qs(self.query_string, keep_blank_values=True)
            self._query = {k: v[0] for k, v in q.items()}
        return self._query

    def __repr__(self):
        return "<Request %s %s%s%s>" % (self.method, self.path,
                                        "?" if self.query_string else "",
                                        self.query_string)


class _BadReturn(Exception):
    pass


_RETURN_HINT = "return str, bytes, dict, list or (status, body)"


def _body(value, what):
    if value is None:
        return b"", None
    if isinstance(value, str):
        return value.encode("utf-8", "replace"), _TEXT
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), _BINARY
    if isinstance(value, (dict, list)):
        return _encode_json(value).encode("utf-8", "replace"), _JSON
    raise _BadReturn("handle returned %s; %s" % (what(type(value).__name__), _RETURN_HINT))


def _convert(result):
    """handle's return value → (status, headers, body)."""
    if result is None:
        return 204, {}, b""
    if isinstance(result, tuple):
        if len(result) == 2:
            status, headers, value = result[0], None, result[1]
        elif len(result) == 3:
            status, headers, value = result
        else:
            raise _BadReturn("handle returned a tuple of %d items; return (status, body) or (status, headers, body)" % len(result))
        if type(status) is not int or not 100 <= status <= 599:
            raise _BadReturn("handle returned status %r; use an HTTP status code (100-599) as the first item" % (status,))
        body, ctype = _body(value, lambda t: "(status, %s)" % t)
        out = {}
        if headers is not None:
            if not isinstance(headers, collections.abc.Mapping):
                raise _BadReturn("handle returned headers of type %s; use a dict {name: value}" % type(headers).__name__)
            for k, v in headers.items():
                out[str(k)] = [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
        if ctype is not None and not any(k.lower() == "content-type" for k in out):
            out["Content-Type"] = [ctype]
        return status, out, body
    body, ctype = _body(result, lambda t: t)
    return 200, {"Content-Type": [ctype]}, body


def _user_tb(tb):
    """Skips the host's and importlib's frames at the top of a traceback."""
    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if fn != _HOST_FILE and not fn.startswith("<frozen "):
            break
        tb = tb.tb_next
    return tb


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect (and asyncio)


def _is_coroutine_function(fn):
    """inspect.iscoroutinefunction without its import cost on every cold start."""
    while hasattr(fn, "__func__"):  # bound methods
        fn = fn.__func__
    code = getattr(fn, "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


def _format_exc(e):
    import traceback  # only failures pay for it

    return "".join(traceback.format_exception(type(e), e, _user_tb(e.__traceback__)))


def _exc_message(e):
    msg = str(e)
    return "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__


class _Channel:
    """fd 3 in, fd 4 out. Writes come from several threads: one lock."""

    def __init__(self, rfd, wfd):
        self.rfile = open(rfd, "rb", buffering=64 << 10)
        self.wfile = open(wfd, "wb", buffering=64 << 10)
        self.lock = threading.Lock()

    def send(self, header, body=b""):
        h = _encode_json(header).encode("utf-8", "replace")
        prefix = _PREFIX.pack(len(h), len(body))
        try:
            with self.lock:
                w = self.wfile
                w.write(prefix)
                w.write(h)
                if body:
                    w.write(body)
                w.flush()
        except (BrokenPipeError, ValueError, OSError):
            _exit(0)  # the worker closed the channel: this instance is done

    def frames(self):
        read = self.rfile.read
        unpack = _PREFIX.unpack
        while True:
            prefix = read(8)
            if len(prefix) < 8:
                return
            hl, bl = unpack(prefix)
            hdr = read(hl)
            body = read(bl) if bl else b""
            if len(hdr) < hl or len(body) < bl:
                return
            yield json.loads(hdr), body


def _exit(code):
    for s in (sys.__stdout__, sys.__stderr__):
        try:
            s.flush()
        except Exception:
            pass
    os._exit(code)


class _Host:
    def __init__(self, channel, handle):
        self.channel = channel
        self.handle = handle

    def _respond(self, h, logs, result=None, exc=None, t0=None):
        tail = ""
        error = None
        if exc is None:
            try:
                status, headers, body = _convert(result)
            except _BadReturn as e:
                status, headers, body, error = 500, {}, b"", str(e)
            except Exception as e:  # json.dumps of a dict that is not JSON
                status, headers, body, error = 500, {}, b"", _exc_message(e)
                tail = _format_exc(e)
        else:
            status, headers, body, error = 500, {}, b"", _exc_message(exc)
            tail = _format_exc(exc)
        header = {"id": h.get("id", ""), "status": status, "headers": headers}
        if t0 is not None:
            header["run_us"] = int((_perf() - t0) * 1e6)
        if error is not None:
            header["error"] = error
        text = logs.finish(tail)
        if text:
            header["logs"] = text
        self.channel.send(header, body)

    def serve(self, h, body):
        """Runs one sync call in this thread and sends its response."""
        logs = _Logs(_LOG_LIMIT)
        token = _call_logs.set(logs)
        t0 = _perf()
        try:
            try:
                result = self.handle(Request(h, body))
            except BaseException as e:  # SystemExit too: a call never kills the host
                self._respond(h, logs, exc=e, t0=t0)
                return
            if hasattr(result, "__await__"):
                self._respond(h, logs, exc=TypeError("handle returned an awaitable; declare it async def handle(req)"), t0=t0)
                return
            self._respond(h, logs, result, t0=t0)
        finally:
            _call_logs.reset(token)

    async def serve_async(self, h, body):
        logs = _Logs(_LOG_LIMIT)
        _call_logs.set(logs)  # this task's own context
        try:
            result = await self.handle(Request(h, body))
        except BaseException as e:
            self._respond(h, logs, exc=e)
            return
        self._respond(h, logs, result)


def _load(code_dir, handler_file):
    path = os.path.join(code_dir, handler_file)
    if not os.path.isfile(path):
        raise _LoadFailure("FileNotFoundError: handler file %s is not in the function's code" % handler_file)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _LoadFailure("ImportError: cannot load %s as a Python module" % handler_file)
    module = importlib.util.module_from_spec(spec)
    if name not in sys.modules:  # never shadow a module already loaded (json, ...)
        sys.modules[name] = module
    spec.loader.exec_module(module)
    handle = getattr(module, "handle", None)
    if handle is None:
        raise _LoadFailure("AttributeError: %s defines no function handle; add def handle(req): ..." % handler_file)
    if not callable(handle):
        raise _LoadFailure("TypeError: handle in %s is a %s, not a function" % (handler_file, type(handle).__name__))
    return handle


class _LoadFailure(Exception):
    pass


def _load_error(e, code_dir):
    """One line naming the error and where: "SyntaxError: invalid syntax (handler.py line 3)"."""
    if isinstance(e, _LoadFailure):
        return str(e)
    where = None
    if isinstance(e, SyntaxError) and e.filename:
        where = (e.filename, e.lineno)
        msg = "%s: %s" % (type(e).__name__, e.msg)
    else:
        msg = (_exc_message(e).splitlines() or [""])[0]
        import traceback

        for frame, lineno in traceback.walk_tb(e.__traceback__):
            fn = frame.f_code.co_filename
            if fn.startswith(code_dir + os.sep):
                where = (fn, lineno)  # innermost frame in the function's code
    if where is None:
        return msg
    fn, lineno = where
    if fn.startswith(code_dir + os.sep):
        fn = os.path.relpath(fn, code_dir)
    return "%s (%s line %s)" % (msg, fn, lineno)


def open_channel():
    """Takes the channel off fds 3 and 4 (so that files the handler opens
    cannot land there by accident; dup'ed fds are not inherited by
    subprocesses) and returns it, or None when they are not open."""
    try:
        rfd, wfd = os.dup(3), os.dup(4)
        os.close(3)
        os.close(4)
    except OSError as e:
        sys.stderr.write("wisp host: channel fds 3 and 4 are not open: %s\n" % e)
        return None
    return _Channel(rfd, wfd)


def await_load(channel, announce):
    """Waits for the one load frame {"load": {"code_dir", "handler", "env"}}
    that binds a waiting host to a function, applies its environment and
    returns (code_dir, handler_file, t_load). announce sends the idle frame
    first (pre-provisioned sandboxes: the worker waits for it; a zygote's
    child does not, its worker learnt the pid from the zygote). The host
    exits when the channel closes first."""
    global _LOG_LIMIT, _CONCURRENCY
    if announce:
        channel.send({"idle": True, "pid": os.getpid()})
    load = None
    for h, _ in channel.frames():
        load = h.get("load")
        break
    if not load:
        _exit(0)  # closed before a function claimed it, or not a load frame
    t_load = time.perf_counter()
    os.environ.update(load.get("env") or {})
    _LOG_LIMIT = _int_env("WISP_LOG_LIMIT", 64 << 10)
    _CONCURRENCY = _int_env("WISP_CONCURRENCY", 1)
    return os.path.abspath(load["code_dir"]), load["handler"], t_load


def run(channel, code_dir, handler_file, t_load):
    """Loads the handler, sends the ready frame and serves calls until the
    worker closes the channel. Never returns."""
    for real in (sys.stdout, sys.stderr):
        try:
            real.reconfigure(line_buffering=True)
        except Exception:
            pass
    sys.stdout = _Capture(sys.__stdout__)
    sys.stderr = _Capture(sys.__stderr__)

    # Imports resolve like a script's: the handler's directory first, then
    # the code directory. The host's own directory is not importable.
    handler_dir = os.path.dirname(os.path.abspath(os.path.join(code_dir, handler_file)))
    sys.path[0:1] = [handler_dir] if handler_dir == code_dir else [handler_dir, code_dir]
    if sys.flags.no_site:
        # The host runs with -S (site's imports cost ~10 ms of every cold
        # start); put Debian's package directories on the path as site
        # would, without processing .pth files.
        ver = "python%d.%d" % sys.version_info[:2]
        for d in ("/usr/local/lib/%s/dist-packages" % ver, "/usr/lib/python3/dist-packages",
                  "/usr/lib/%s/dist-packages" % ver):
            if os.path.isdir(d) and d not in sys.path:
                sys.path.append(d)
    tmp = "/tmp"
    os.chdir(tmp if os.path.isdir(tmp) and os.access(tmp, os.W_OK) else code_dir)

    try:
        handle = _load(code_dir, handler_file)
    except BaseException as e:
        logs = "" if isinstance(e, _LoadFailure) else _format_exc(e)
        channel.send({"ready": False, "error": _load_error(e, code_dir), "logs": logs})
        _exit(1)

    host = _Host(channel, handle)
    is_async = _is_coroutine_function(handle) or _is_coroutine_function(getattr(handle, "__call__", None))
    # serial: calls are served one at a time in the order they arrive, and
    # one whose deadline passed while it waited is skipped. The worker may
    # then queue calls here behind a running one (pipelining).
    serial = not is_async and _CONCURRENCY <= 1
    channel.send({"ready": True, "init_ms": (time.perf_counter() - t_load) * 1000, "pid": os.getpid(),
                  "serial": serial})

    if is_async:
        import asyncio  # only async handlers pay its ~90 ms import

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="wisp-asyncio", daemon=True).start()
        for h, body in channel.frames():
            asyncio.run_coroutine_threadsafe(host.serve_async(h, body), loop)
    elif _CONCURRENCY > 1:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=_CONCURRENCY, thread_name_prefix="wisp-call")
        for h, body in channel.frames():
            pool.submit(host.serve, h, body)
    else:
        serve = host.serve
        send = channel.send
        now = time.monotonic_ns  # CLOCK_MONOTONIC, the worker's clock too
        for h, body in channel.frames():
            deadline = h.get("deadline")
            if deadline:
                left = deadline - now()
                if left <= 0:
                    # Its caller gave up while it waited behind another
                    # call: it never starts.
                    send({"id": h.get("id", ""), "status": 504, "skipped": True})
                    continue
                h["timeout_ms"] = max(left // 1000000, 1)
            serve(h, body)
    # End of input: the worker closed the channel.
    _exit(0)


def main(argv):
    # host.py --wait: a pre-provisioned sandbox. The interpreter starts
    # before any function is known, says {"idle": true}, and waits for one
    # load frame {"load": {"code_dir", "handler", "env"}} that binds it to
    # a function; from there on it is an ordinary host. (zygote.py's
    # children take the same path through await_load and run.)
    wait = len(argv) == 2 and argv[1] == "--wait"
    if not wait and len(argv) != 3:
        sys.stderr.write("usage: host.py CODE_DIR HANDLER_FILE | host.py --wait\n")
        return 2
    channel = open_channel()
    if channel is None:
        return 2

    signal.signal(signal.SIGTERM, lambda signum, frame: _exit(0))

    if wait:
        code_dir, handler_file, t_load = await_load(channel, announce=True)
    else:
        code_dir, handler_file, t_load = os.path.abspath(argv[1]), argv[2], _T0
    run(channel, code_dir, handler_file, t_load)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
