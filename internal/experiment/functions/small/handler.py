import time


def handle(req):
    """The small function: Python hello. ?sleep_ms=N waits, ?work_ms=N spins the CPU."""
    q = req.query
    sleep_ms = float(q.get("sleep_ms") or 0)
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)
    work_ms = float(q.get("work_ms") or 0)
    if work_ms > 0:
        end = time.perf_counter() + work_ms / 1000
        n = 0
        while time.perf_counter() < end:
            n += 1
    return "hello"
