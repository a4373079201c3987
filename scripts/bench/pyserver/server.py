"""The smallest keep-alive HTTP/1.1 server in pure Python: every request is
answered "hello", with no routing, parsing or sandbox. It stands for "the
Python server alone" that issue 2's warm-path goals were set against, so
that scripts/bench-warm.sh measures that reference in the same run.

Usage: /usr/bin/python3 server.py PORT (the interpreter of wisp's python3 runtime)
"""
import asyncio
import signal
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


class Hello(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        # Requests have no body here (GET), so each header end is one request.
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


def main():
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Hello, "127.0.0.1", int(sys.argv[1])))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()


if __name__ == "__main__":
    main()
