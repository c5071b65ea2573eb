"""A minimal asyncio RESP2 connection: thousands of them fit in one process (fleet.py's simulated machines).

redis-py's asyncio client costs far more memory and CPU per connection; a simulated machine needs
only to send commands on its own sockets, in the order and on the connections the real one uses.
"""
import asyncio


class ReplyError(Exception):
    """An error reply (`-ERR ...`), returned in place inside pipelines."""


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """One connection; used by one coroutine at a time (as a worker process uses its own)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host, port):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def _read(self):
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [await self._read() for _ in range(n)]
        if kind == b"-":
            return ReplyError(rest.decode(errors="replace"))
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

    async def call(self, *args):
        self.writer.write(encode(args))
        reply = await self._read()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def pipeline(self, commands):
        """Sends every command in one write; returns the replies (errors in place)."""
        self.writer.write(b"".join(encode(c) for c in commands))
        return [await self._read() for _ in commands]

    def close(self):
        self.writer.close()
