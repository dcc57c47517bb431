"""
An asyncio HTTP/1.1 client for streamed Messages API requests: it sends a
request that carries a L{Plan}, reads the SSE response event by event,
timestamps each event on arrival and checks the stream with
L{StreamCheck}.  One L{Connection} carries requests one after another
(keep-alive) until either side closes it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

from attrs import define, field

from benchmarks.wire import Plan, StreamCheck, requestBody

#: A response head larger than this is a problem, not a response.
MAX_HEAD = 64 * 1024


@define
class StreamResult:
    """
    How one request went.

    @ivar outcome: C{"complete"} (200, every byte verified),
        C{"error-event"} (200, then an SSE C{error} event and a clean end),
        C{"error-response"} (a non-200 status with an Anthropic error body),
        C{"cancelled"} (the client hung up on purpose) or C{"failed"}
        (anything else; C{problem} says what).
    @ivar errorType: The Anthropic error type of an error event or response.
    @ivar cancelNs: When the client hung up (monotonic ns), if it did.
    @ivar headNs: When the response head had arrived (monotonic ns), if it
        did: C{headNs - startedNs} is the time to first byte.
    """

    plan: Plan
    outcome: str = "failed"
    status: int | None = None
    problem: str | None = None
    errorType: str | None = None
    latencies: list[int] = field(factory=list)
    received: int = 0
    startedNs: int = 0
    endedNs: int = 0
    cancelNs: int | None = None
    headNs: int | None = None


class BadResponseError(Exception):
    pass


class Connection:
    """
    One client connection to the proxy.
    """

    def __init__(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.host = host
        self.port = port
        self._reader = reader
        self._writer = writer
        self.reusable = True

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 10) -> Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_HEAD), timeout
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(host, port, reader, writer)

    def close(self, reset: bool = False) -> None:
        """
        Hang up: a FIN, or an RST when C{reset}.
        """
        self.reusable = False
        if reset:
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self._writer.transport.abort()
        else:
            self._writer.close()

    async def closed(self) -> None:
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError):
            pass

    async def stream(
        self,
        plan: Plan,
        timeout: float,
        cancelAfter: float | None = None,
        cancelReset: bool = False,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        check: StreamCheck | None = None,
        path: str = "/v1/messages",
    ) -> StreamResult:
        """
        Send one request and read its response to the end, for at most
        C{timeout} seconds; with C{cancelAfter}, hang up that many seconds
        after sending instead (C{cancelReset}: with an RST).

        @param body: The request body, if not L{requestBody} of C{plan}.
        @param check: What checks the stream, if not a L{StreamCheck}.
        @param path: The request target.
        """
        result = StreamResult(plan=plan, startedNs=time.monotonic_ns())
        check = StreamCheck(plan) if check is None else check
        body = requestBody(plan) if body is None else body
        extra = "".join(
            f"{name}: {value}\r\n" for name, value in (headers or {}).items()
        )
        self._writer.write(
            (
                f"POST {path} HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                "Content-Type: application/json\r\n"
                "Anthropic-Version: 2023-06-01\r\n"
                "X-Api-Key: sk-ant-api03-load-test-not-a-key\r\n"
                f"{extra}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        limit = timeout if cancelAfter is None else min(timeout, cancelAfter)
        try:
            await asyncio.wait_for(self._read(result, check), limit)
        except asyncio.TimeoutError:
            self.reusable = False
            if cancelAfter is not None and cancelAfter <= timeout:
                result.cancelNs = time.monotonic_ns()
                self.close(reset=cancelReset)
                result.outcome = "cancelled"
            else:
                result.problem = f"no end within {timeout:.0f} s"
                self.close(reset=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.reusable = False
            self.close(reset=True)
            result.problem = result.problem or f"connection broke: {e!r}"
        except BadResponseError as e:
            self.reusable = False
            self.close(reset=True)
            result.problem = str(e)
        result.endedNs = time.monotonic_ns()
        result.latencies = check.latencies
        result.received = check.received
        if result.problem is not None:
            result.outcome = "failed"
        return result

    async def _read(self, result: StreamResult, check: StreamCheck) -> None:
        reader = self._reader
        head = await reader.readuntil(b"\r\n\r\n")
        result.headNs = time.monotonic_ns()
        statusLine, *lines = head[:-4].split(b"\r\n")
        parts = statusLine.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise BadResponseError(f"bad status line {statusLine[:80]!r}")
        result.status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"connection") == b"close":
            self.reusable = False
        chunked = headers.get(b"transfer-encoding") == b"chunked"
        length = headers.get(b"content-length")
        if result.status != 200:
            body = await self._body(chunked, length)
            try:
                error = json.loads(body)["error"]["type"]
            except (ValueError, KeyError, TypeError):
                raise BadResponseError(
                    f"status {result.status} without an Anthropic error body"
                ) from None
            result.errorType = str(error)
            result.outcome = "error-response"
            return
        if not headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            raise BadResponseError("a 200 that is not an event stream")
        pending = bytearray()

        def feed(data: bytes) -> None:
            now = time.monotonic_ns()
            pending.extend(data)
            while True:
                end = pending.find(b"\n\n")
                if end < 0:
                    return
                check.event(bytes(pending[: end + 2]), now)
                del pending[: end + 2]

        try:
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    data = await reader.readexactly(size + 2)
                    feed(data[:-2])
            elif length is not None:
                remaining = int(length)
                while remaining:
                    data = await reader.read(min(remaining, 65536))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    feed(data)
            else:
                self.reusable = False
                while data := await reader.read(65536):
                    feed(data)
        except (OSError, asyncio.IncompleteReadError) as e:
            if check.errorEvent is None:
                raise BadResponseError(
                    f"the stream broke off without an error event ({e!r})"
                ) from None
            self.reusable = False
        if pending:
            check.problems.append("the stream ended inside an event")
        if check.problems:
            raise BadResponseError("; ".join(check.problems))
        if check.errorEvent is not None:
            error = check.errorEvent.get("error")
            result.errorType = (
                str(error.get("type")) if isinstance(error, dict) else None
            )
            result.outcome = "error-event"
        elif check.complete:
            result.outcome = "complete"
        else:
            raise BadResponseError("the stream ended cleanly without message_stop")

    async def _body(self, chunked: bool, length: bytes | None) -> bytes:
        reader = self._reader
        if chunked:
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return bytes(body)
                body += (await reader.readexactly(size + 2))[:-2]
                if len(body) > MAX_HEAD:
                    raise BadResponseError("error body too large")
        if length is not None:
            if int(length) > MAX_HEAD:
                raise BadResponseError("error body too large")
            return await reader.readexactly(int(length))
        self.reusable = False
        return await reader.read(MAX_HEAD)


async def control(
    port: int, method: str, target: str, timeout: float = 10
) -> dict[str, object]:
    """
    Ask the mock upstream's control port (see L{benchmarks.mock}).
    """

    async def ask() -> dict[str, object]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            raw = await reader.read()
        finally:
            writer.close()
        payload: dict[str, object] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
        return payload

    return await asyncio.wait_for(ask(), timeout)
