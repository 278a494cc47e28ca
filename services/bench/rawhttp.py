"""A minimal asyncio HTTP/1.1 client with keep-alive, for the benchmark's load generator only.

The load generator shares the machine with the services it measures: every millisecond of CPU it
spends per request is taken from them. httpx costs about 3.5 ms of CPU per request here (as much as
the cheapest endpoint it drives); this client does the same job for a fraction of that, because it
does only what the benchmark needs: loopback HTTP/1.1, JSON bodies, Content-Length or chunked
responses, a pool of kept-alive connections per origin. Not a general-purpose client.
"""

from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlsplit


class HttpError(Exception):
    """A connection failed or the response could not be read; the connection is discarded."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class RawHttpClient:
    def __init__(self, max_connections: int) -> None:
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = collections.defaultdict(collections.deque)
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body). Raises HttpError on a broken connection; cancellation (a timeout) closes it."""
        parts = urlsplit(url)
        origin = (parts.hostname or "127.0.0.1", parts.port or 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {origin[0]}:{origin[1]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        async with self._slots:
            connection, reused = await self._connection(origin)
            keep = False
            try:
                try:
                    status, data, keep = await self._exchange(connection, payload)
                except (HttpError, OSError, asyncio.IncompleteReadError) as error:
                    if not reused:
                        raise HttpError(f"{type(error).__name__}: {error}") from error
                    # A kept-alive connection the server had closed: retry once on a fresh one.
                    connection.close()
                    self._open.discard(connection)
                    connection, reused = await self._connection(origin, fresh=True)
                    status, data, keep = await self._exchange(connection, payload)
                return status, data
            except (OSError, asyncio.IncompleteReadError) as error:
                raise HttpError(f"{type(error).__name__}: {error}") from error
            finally:
                if keep:
                    self._idle[origin].append(connection)
                else:  # failed, cancelled mid-response, or the server said close
                    connection.close()
                    self._open.discard(connection)

    async def _connection(self, origin: tuple[str, int], fresh: bool = False) -> tuple[_Connection, bool]:
        idle = self._idle[origin]
        if idle and not fresh:
            return idle.pop(), True
        try:
            reader, writer = await asyncio.open_connection(*origin)
        except OSError as error:
            raise HttpError(f"connect {origin[0]}:{origin[1]}: {error}") from error
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection, False

    @staticmethod
    async def _exchange(connection: _Connection, payload: bytes) -> tuple[int, bytes, bool]:
        connection.writer.write(payload)
        await connection.writer.drain()
        reader = connection.reader
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed before a response")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError) as error:
            raise HttpError(f"bad status line {status_line[:80]!r}") from error
        length, chunked, keep = None, False, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep = value != b"close"
        if chunked:
            data = bytearray()
            while size := int((await reader.readline()).split(b";")[0], 16):
                data += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readline()  # the blank line after the last chunk
            return status, bytes(data), keep
        if length is None:
            if status in (204, 304) or 100 <= status < 200:
                return status, b"", keep
            return status, await reader.read(), False  # body until close
        return status, await reader.readexactly(length), keep

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
