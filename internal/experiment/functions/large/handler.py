# The large function: loads about LARGE_MB MiB (default 50) into memory at
# start-up, as a handler that loads a model or a data set does. Every page is
# written, so the memory is really committed.
import os
import zlib

_MB = int(os.environ.get("LARGE_MB", "50"))
_DATA = b"\x5a" * (_MB << 20)
_CRC = zlib.crc32(_DATA[: 1 << 20])


def handle(req):
    return {"bytes": len(_DATA), "crc": _CRC}
