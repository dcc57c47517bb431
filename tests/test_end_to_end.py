"""
End-to-end tests: C{twistd -n ccrouter} runs as a child process on a free
port, in front of mock upstreams that are real HTTP servers on 127.0.0.1,
driven by real clients (treq, raw sockets and the official C{anthropic}
SDK).
"""

from __future__ import annotations

import gzip
import json
import re
import socket
from pathlib import Path
from typing import Any

import anthropic
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.server import NOT_DONE_YET

from tests.mockupstream import (
    Behaviour,
    FloodingBody,
    LockstepStream,
    MockUpstream,
    anthropicMessage,
    anthropicStream,
    hang,
    respondEvents,
    respondJSON,
)
from tests.proxyprocess import ProxyProcess
from tests.rawclient import rawConnect
from tests.sseclient import EventReader
from tests.tlsfixtures import makeCertificate

CLIENT_KEY = "sk-ant-api03-CLIENT-CANARY-7d2e"
CLIENT_TOKEN = "sk-ant-oat01-CLIENT-TOKEN-CANARY-51ab"
ZAI_KEY = "zai-PROVIDER-CANARY-c4f9"
CANARIES = (CLIENT_KEY, CLIENT_TOKEN, ZAI_KEY)


def messageBody(model: str, stream: bool = True, padding: int = 0) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "hi" + "x" * padding}],
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc"}],
            "max_tokens": 32000,
            "stream": stream,
        },
        separators=(",", ":"),
    ).encode()


def freePort() -> int:
    """
    A port nothing listens on (bound, then released).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parseResponse(raw: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    statusLine, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(statusLine.split()[1]), headers, body


def completeResponse(raw: bytes) -> bool:
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return body.endswith(b"0\r\n\r\n")


class EndToEndCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(self.pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    def upstream(
        self, behaviour: Behaviour | None = None, tls: Any = None
    ) -> MockUpstream:
        mock = MockUpstream() if behaviour is None else MockUpstream(behaviour)
        mock.listen(tls)
        self.addCleanup(mock.stop)
        return mock

    def writeConfig(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    async def proxy(
        self, config: str, environ: dict[str, str] | None = None
    ) -> ProxyProcess:
        process = ProxyProcess(
            [
                "--config",
                str(self.writeConfig(config)),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            environ,
        )
        self.addCleanup(process.stop)
        await process.start()
        return process

    async def routedProxy(
        self, anthropicMock: MockUpstream, zaiMock: MockUpstream, extra: str = ""
    ) -> ProxyProcess:
        return await self.proxy(
            f"""
default:
  url: "{anthropicMock.url}"
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
    upstream:
      url: "{zaiMock.url}/api/anthropic"
      auth:
        header: "x-api-key"
        value: "${{Z_AI_API_KEY}}"
{extra}""",
            {"Z_AI_API_KEY": ZAI_KEY},
        )

    async def post(
        self,
        proxy: ProxyProcess,
        body: bytes,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Any:
        sent = {
            b"x-api-key": [CLIENT_KEY.encode()],
            b"content-type": [b"application/json"],
            b"anthropic-version": [b"2023-06-01"],
        }
        sent.update(headers or {})
        return await self.http.request(
            "POST",
            f"{proxy.url}/v1/messages?beta=true",
            headers=sent,
            data=body,
            unbuffered=True,
            allow_redirects=False,
        )

    async def rawRequest(self, proxy: ProxyProcess, request: bytes) -> bytes:
        assert proxy.url is not None
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.write(request)
        raw = await client.until(completeResponse)
        client.transport.loseConnection()
        await client.closed
        return raw

    def assertNoCanaries(self, *texts: bytes) -> None:
        for text in texts:
            for canary in CANARIES:
                self.assertNotIn(canary.encode(), text)


class PassthroughTests(EndToEndCase):
    async def test_passthroughFidelity(self) -> None:
        """
        H5: an unrouted request reaches the default upstream with the same
        method, path and query, the same body bytes, and the same headers minus
        the hop-by-hop ones; the response comes back as the upstream sent it.
        """
        anthropicMock = self.upstream(
            respondJSON(
                anthropicMessage("hello"),
                headers={
                    b"request-id": b"req_0123",
                    b"anthropic-ratelimit-requests-remaining": b"49",
                    b"retry-after": b"3",
                    b"x-upstream-only": b"kept",
                },
            )
        )
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        body = messageBody("claude-sonnet-4-5", stream=False, padding=100_000)
        endToEnd = [
            (b"Accept", b"application/json"),
            (b"Authorization", b"Bearer " + CLIENT_TOKEN.encode()),
            (b"Content-Type", b"application/json"),
            (b"User-Agent", b"claude-cli/2.1.328 (external, sdk-cli)"),
            (b"X-Claude-Code-Session-Id", b"4c8f0a9e-1111-4a2b-9c3d-000000000001"),
            (b"anthropic-beta", b"claude-code-20250219,oauth-2025-04-20"),
            (b"anthropic-version", b"2023-06-01"),
            (b"x-api-key", CLIENT_KEY.encode()),
            (b"x-app", b"cli"),
        ]
        hopByHop = [
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"must not pass"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authorization", b"Basic c2VjcmV0"),
            (b"TE", b"trailers"),
        ]
        request = (
            b"POST /v1/messages?beta=true&x=%2F HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + b"".join(
                name + b": " + value + b"\r\n" for name, value in endToEnd + hopByHop
            )
            + b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        status, headers, responseBody = parseResponse(
            await self.rawRequest(proxy, request)
        )

        [received] = anthropicMock.requests
        self.assertEqual(received.method, b"POST")
        self.assertEqual(received.uri, b"/v1/messages?beta=true&x=%2F")
        self.assertEqual(received.body, body)
        for name, value in endToEnd:
            self.assertEqual(received.header(name), [value], name)
        for name, _ in hopByHop:
            self.assertEqual(received.header(name), [], name)
        self.assertEqual(received.header(b"accept-encoding"), [b"identity"])
        raw = anthropicMock.allRaw.lower()
        self.assertEqual(raw.count(b"\r\nhost: "), 1)
        self.assertIn(b"\r\nhost: 127.0.0.1:%d\r\n" % anthropicMock.portNumber, raw)
        self.assertEqual(raw.count(b"\r\ncontent-length: "), 1)
        self.assertNotIn(b"transfer-encoding", raw)

        self.assertEqual(status, 200)
        self.assertEqual(json.loads(responseBody), anthropicMessage("hello"))
        self.assertEqual(headers[b"request-id"], [b"req_0123"])
        self.assertEqual(headers[b"anthropic-ratelimit-requests-remaining"], [b"49"])
        self.assertEqual(headers[b"retry-after"], [b"3"])
        self.assertEqual(headers[b"x-upstream-only"], [b"kept"])
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"content-length"], [b"%d" % len(responseBody)])

    async def test_responseFraming(self) -> None:
        """
        H6: an upstream answer compressed although identity was asked for,
        with its C{Content-Length}, C{Connection} and C{Keep-Alive}: the
        client gets the compressed bytes as they were, one
        C{Content-Length} that is true of them, and none of the hop-by-hop
        headers.

        Not checked: a header the upstream names in C{Connection} (here
        C{x-hop}) is relayed, because Twisted's HTTP client keeps the
        upstream's C{Connection} header from the response it hands over.
        """
        compressed = gzip.compress(json.dumps(anthropicMessage("zipped")).encode())

        def zipped(request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-length", b"%d" % len(compressed))
            request.setHeader(b"connection", b"x-hop")
            request.setHeader(b"keep-alive", b"timeout=5")
            request.setHeader(b"x-hop", b"upstream's hop")
            return compressed

        anthropicMock = self.upstream(zipped)
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        raw = await self.rawRequest(
            proxy,
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAccept-Encoding: gzip\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )
        status, headers, body = parseResponse(raw)
        self.assertEqual(status, 200)
        self.assertEqual(body, compressed)
        self.assertEqual(headers[b"content-length"], [b"%d" % len(compressed)])
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        for name in (b"keep-alive", b"transfer-encoding"):
            self.assertNotIn(name, headers)
        self.assertNotIn(b"x-hop", b"".join(headers.get(b"connection", [])))
        self.assertEqual(json.loads(gzip.decompress(body)), anthropicMessage("zipped"))

    async def test_upstreamConnectionsAreReused(self) -> None:
        """
        Sequential requests to one upstream share one pooled keep-alive
        connection, even from different client connections.
        """
        anthropicMock = self.upstream()
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        for _ in range(3):
            raw = await self.rawRequest(
                proxy,
                b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            )
            self.assertEqual(parseResponse(raw)[0], 200)
        self.assertEqual(len(anthropicMock.requests), 3)
        self.assertEqual(len(anthropicMock.rawConnections), 1)

    async def test_otherMethodsAndPaths(self) -> None:
        """
        C{GET /v1/models} and C{HEAD /} go to the default upstream unchanged,
        even when a route would match the text of the request.
        """
        anthropicMock = self.upstream(respondJSON({"data": [], "has_more": False}))
        zaiMock = self.upstream()
        proxy = await self.routedProxy(anthropicMock, zaiMock)
        response = await self.http.get(
            f"{proxy.url}/v1/models?limit=1000&q=claude-haiku"
        )
        self.assertEqual(
            json.loads(await response.content()), {"data": [], "has_more": False}
        )
        response = await self.http.head(f"{proxy.url}/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            [(r.method, r.uri) for r in anthropicMock.requests],
            [(b"GET", b"/v1/models?limit=1000&q=claude-haiku"), (b"HEAD", b"/")],
        )
        self.assertEqual(zaiMock.requests, [])


class RoutingTests(EndToEndCase):
    async def test_credentialSwapBothDirections(self) -> None:
        """
        S8, S13: the provider gets its key and never the client's credentials;
        Anthropic gets the client's credentials and never the provider's key;
        neither secret reaches the proxy's log.
        """
        anthropicMock = self.upstream(respondJSON(anthropicMessage("from anthropic")))
        zaiMock = self.upstream(respondJSON(anthropicMessage("from zai")))
        proxy = await self.routedProxy(anthropicMock, zaiMock)
        clientCredentials = {
            b"x-api-key": [CLIENT_KEY.encode()],
            b"authorization": [b"Bearer " + CLIENT_TOKEN.encode()],
        }

        response = await self.post(
            proxy, messageBody("claude-haiku-4-5", stream=False), clientCredentials
        )
        self.assertEqual(
            json.loads(await response.content())["content"][0]["text"], "from zai"
        )
        response = await self.post(
            proxy, messageBody("claude-sonnet-4-5", stream=False), clientCredentials
        )
        self.assertEqual(
            json.loads(await response.content())["content"][0]["text"], "from anthropic"
        )

        [toZai] = zaiMock.requests
        self.assertEqual(toZai.header(b"x-api-key"), [ZAI_KEY.encode()])
        self.assertEqual(toZai.header(b"authorization"), [])
        self.assertNotIn(CLIENT_KEY.encode(), zaiMock.allRaw)
        self.assertNotIn(CLIENT_TOKEN.encode(), zaiMock.allRaw)

        [toAnthropic] = anthropicMock.requests
        self.assertEqual(toAnthropic.header(b"x-api-key"), [CLIENT_KEY.encode()])
        self.assertEqual(
            toAnthropic.header(b"authorization"), [b"Bearer " + CLIENT_TOKEN.encode()]
        )
        self.assertNotIn(ZAI_KEY.encode(), anthropicMock.allRaw)

        await proxy.stop()
        self.assertNoCanaries(proxy.output)

    async def test_modelRewrite(self) -> None:
        """
        A route's C{model} replaces the model name and nothing else; the
        path keeps the upstream's base path in front.
        """
        anthropicMock = self.upstream()
        zaiMock = self.upstream()
        proxy = await self.routedProxy(anthropicMock, zaiMock)
        body = messageBody("claude-haiku-4-5", stream=False, padding=200)
        await (await self.post(proxy, body)).content()
        [received] = zaiMock.requests
        self.assertEqual(received.uri, b"/api/anthropic/v1/messages?beta=true")
        self.assertEqual(
            received.body, body.replace(b'"claude-haiku-4-5"', b'"glm-4.5-air"')
        )
        self.assertEqual(anthropicMock.requests, [])


class StreamingTests(EndToEndCase):
    async def test_eventsArriveOneByOne(self) -> None:
        """
        100 events, 20 ms apart, where the upstream sends each event only
        after the client has received the previous one: a proxy that holds
        back a single event stalls the stream and fails the test.
        """
        stream = LockstepStream(count=100, spacing=0.02)
        zaiMock = self.upstream(stream)
        proxy = await self.routedProxy(self.upstream(), zaiMock)
        response = await self.post(proxy, messageBody("claude-haiku-4-5"))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/event-stream"]
        )
        received: list[bytes] = []

        def onEvent(event: bytes) -> None:
            index = len(received)
            self.assertEqual(event, stream.event(index))
            received.append(event)
            stream.clientReceived(index)

        reader = EventReader(onEvent)
        response.deliverBody(reader)
        body = await reader.done.addTimeout(60, reactor)
        self.assertEqual(len(received), 100)
        self.assertEqual(body, b"".join(stream.event(i) for i in range(100)))

    async def test_backpressure(self) -> None:
        """
        H11: a client that stops reading pauses the upstream: with a 64 MiB body
        and a client that reads nothing, the upstream stalls having sent a small
        part, the proxy's memory stays flat, and once the client reads again
        every byte arrives.
        """
        total = 64 * 1024 * 1024
        flood = FloodingBody(total)
        anthropicMock = self.upstream(flood)
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        assert proxy.url is not None
        rssBefore = proxy.rssKiB()
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await client.until(lambda raw: b"\r\n\r\n" in raw)
        client.transport.pauseProducing()

        # Wait (bounded) until the upstream has been held back for a whole
        # second without being resumed.
        stalledFor = 0
        lastResume = -1
        for _ in range(200):
            await deferLater(reactor, 0.1, lambda: None)
            if flood.paused and flood.resumeCount == lastResume:
                stalledFor += 1
                if stalledFor >= 10:
                    break
            else:
                stalledFor = 0
                lastResume = flood.resumeCount
        self.assertGreaterEqual(stalledFor, 10, "the upstream was never held back")
        self.assertLess(flood.written, total // 2)
        growthKiB = proxy.rssKiB() - rssBefore
        self.assertLess(growthKiB, 24 * 1024, f"proxy RSS grew {growthKiB} KiB")

        client.transport.resumeProducing()
        raw = await client.until(
            lambda raw: (
                raw.endswith(b"x" * 10 + b"\n")
                and len(raw.partition(b"\r\n\r\n")[2]) >= total
            ),
            timeout=60,
        )
        self.assertEqual(len(raw.partition(b"\r\n\r\n")[2]), total)
        self.assertEqual(flood.written, total)
        client.transport.loseConnection()
        await client.closed

    async def test_clientDisconnectClosesUpstream(self) -> None:
        """
        F14: a client that goes away mid-stream makes the proxy close the
        upstream connection within a second, seen from the upstream's side.
        """
        events = anthropicStream(" ".join(["word"] * 2000))
        zaiMock = self.upstream(respondEvents(events, spacing=0.02))
        proxy = await self.routedProxy(self.upstream(), zaiMock)
        response = await self.post(proxy, messageBody("claude-haiku-4-5"))
        firstEvents: defer.Deferred[None] = defer.Deferred()

        def onEvent(event: bytes) -> None:
            if len(reader.events) == 3 and not firstEvents.called:
                firstEvents.callback(None)

        reader = EventReader(onEvent)
        response.deliverBody(reader)
        await firstEvents.addTimeout(10, reactor)
        assert reader.transport is not None
        reader.transport.stopProducing()
        [upstreamGone] = zaiMock.disconnects
        await upstreamGone.addTimeout(1.0, reactor)
        await self.assertFailure(reader.done, ResponseFailed)

    async def test_upstreamDropBetweenEvents(self) -> None:
        """
        F6: an upstream that drops the connection between events ends the
        client's stream with an Anthropic C{error} event.
        """
        events = anthropicStream("one two three")[:4]

        def dropAfterEvents(request: Any) -> int:
            request.setHeader(b"content-type", b"text/event-stream")
            for event in events:
                request.write(event)
            # Close without the final chunk, after what was written is sent.
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        zaiMock = self.upstream(dropAfterEvents)
        proxy = await self.routedProxy(self.upstream(), zaiMock)
        response = await self.post(proxy, messageBody("claude-haiku-4-5"))
        reader = EventReader()
        response.deliverBody(reader)
        body = await reader.done
        self.assertEqual(reader.events[:4], events)
        self.assertEqual(len(reader.events), 5)
        self.assertTrue(reader.events[4].startswith(b"event: error\ndata: "))
        error = json.loads(reader.events[4].split(b"data: ", 1)[1])
        self.assertEqual(error["error"]["type"], "api_error")
        self.assertIn(f"127.0.0.1:{zaiMock.portNumber}", error["error"]["message"])
        self.assertNoCanaries(body)

    async def test_upstreamDropInsideEvent(self) -> None:
        """
        F6: an upstream that drops the connection in the middle of an event
        aborts the client's connection: the truncated stream cannot look
        complete.
        """

        def dropMidEvent(request: Any) -> int:
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(anthropicStream("one")[0])
            request.write(b'event: content_block_delta\ndata: {"type": "cont')
            # Close without the final chunk, after what was written is sent.
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        zaiMock = self.upstream(dropMidEvent)
        proxy = await self.routedProxy(self.upstream(), zaiMock)
        response = await self.post(proxy, messageBody("claude-haiku-4-5"))
        reader = EventReader()
        response.deliverBody(reader)
        await self.assertFailure(reader.done, ResponseFailed)
        self.assertEqual(reader.events, [anthropicStream("one")[0]])


class ErrorTests(EndToEndCase):
    async def errorFrom(
        self, proxy: ProxyProcess, model: str = "claude-haiku-4-5"
    ) -> tuple[int, dict[str, Any]]:
        response = await self.post(proxy, messageBody(model))
        body = await response.content()
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertNoCanaries(body)
        return response.code, json.loads(body)

    async def test_unreachableUpstream(self) -> None:
        port = freePort()
        proxy = await self.proxy(
            f'routes: [{{match: haiku, upstream: {{url: "http://127.0.0.1:{port}",'
            f' auth: {{header: x-api-key, value: "${{Z_AI_API_KEY}}"}}}}}}]\n',
            {"Z_AI_API_KEY": ZAI_KEY},
        )
        status, body = await self.errorFrom(proxy)
        self.assertEqual(status, 502)
        self.assertEqual(
            body,
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": f"cannot connect to upstream 127.0.0.1:{port}: connection refused",
                },
            },
        )
        await proxy.stop()
        self.assertNoCanaries(proxy.output)

    async def test_tlsFailure(self) -> None:
        """
        F18: an HTTPS upstream whose certificate is not trusted gets 502 naming
        TLS, and the request is never sent.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        _, options = makeCertificate(directory)
        secureMock = self.upstream(tls=options)
        proxy = await self.proxy(
            f'routes: [{{match: haiku, upstream: {{url: "https://localhost:{secureMock.portNumber}"}}}}]\n'
        )
        status, body = await self.errorFrom(proxy)
        self.assertEqual(status, 502)
        self.assertEqual(body["error"]["type"], "api_error")
        self.assertTrue(
            body["error"]["message"].startswith(
                f"TLS with upstream localhost:{secureMock.portNumber} failed: "
            ),
            body,
        )
        self.assertEqual(secureMock.requests, [])

    async def test_httpsUpstream(self) -> None:
        """
        An HTTPS upstream whose certificate is trusted (here through
        C{SSL_CERT_FILE}) is reached with the host name verified.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        caFile, options = makeCertificate(directory)
        secureMock = self.upstream(respondJSON(anthropicMessage("secure")), tls=options)
        process = ProxyProcess(
            [
                "--config",
                str(
                    self.writeConfig(
                        f'routes: [{{match: haiku, upstream: {{url: "https://localhost:{secureMock.portNumber}"}}}}]\n'
                    )
                ),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            {"SSL_CERT_FILE": str(caFile)},
        )
        self.addCleanup(process.stop)
        await process.start()
        response = await self.post(
            process, messageBody("claude-haiku-4-5", stream=False)
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            json.loads(await response.content())["content"][0]["text"], "secure"
        )
        [received] = secureMock.requests
        self.assertEqual(
            received.header(b"host"), [b"localhost:%d" % secureMock.portNumber]
        )

    async def test_responseHeadersTimeout(self) -> None:
        """
        F2: an upstream that accepts and stays silent gets a 504
        C{timeout_error} at the response-headers timeout.
        """
        zaiMock = self.upstream(hang)
        proxy = await self.routedProxy(
            self.upstream(), zaiMock, "timeouts: {stream_headers: 0.5}\n"
        )
        status, body = await self.errorFrom(proxy)
        self.assertEqual(status, 504)
        self.assertEqual(body["error"]["type"], "timeout_error")
        self.assertEqual(
            body["error"]["message"],
            f"upstream 127.0.0.1:{zaiMock.portNumber} sent no response within 0.5 s",
        )

    async def test_connectTimeout(self) -> None:
        """
        F3: an upstream whose accept queue is full never completes the TCP
        handshake; the connect timeout gives 504.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
            self.addCleanup(filler.close)
        proxy = await self.proxy(
            f'routes: [{{match: haiku, upstream: {{url: "http://127.0.0.1:{port}",'
            " timeouts: {connect: 0.5}}}]\n"
        )
        status, body = await self.errorFrom(proxy)
        self.assertEqual(status, 504)
        self.assertEqual(
            body["error"]["message"],
            f"connecting to upstream 127.0.0.1:{port} timed out after 0.5 s",
        )

    async def test_requestTooLarge(self) -> None:
        """
        H8: a body over C{max_body_bytes} gets 413 C{request_too_large} and
        never reaches the upstream.
        """
        anthropicMock = self.upstream()
        proxy = await self.proxy(
            f'server: {{max_body_bytes: 1KiB}}\ndefault: {{url: "{anthropicMock.url}"}}\n'
        )
        response = await self.post(
            proxy, messageBody("claude-sonnet-4-5", padding=2000)
        )
        self.assertEqual(response.code, 413)
        self.assertEqual(
            json.loads(await response.content()),
            {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": "request body is larger than 1024 bytes",
                },
            },
        )
        self.assertEqual(anthropicMock.requests, [])

    async def test_browserRequestsRefused(self) -> None:
        """
        S2, S3: a web page cannot use the proxy: a request with an Origin, or
        addressed to a foreign Host (DNS rebinding), gets 403 and reaches no
        upstream.
        """
        anthropicMock = self.upstream()
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        for extra in [
            b"Host: 127.0.0.1\r\nOrigin: https://evil.example\r\n",
            b"Host: attacker.example\r\n",
        ]:
            raw = await self.rawRequest(
                proxy,
                b"POST /v1/messages HTTP/1.1\r\n"
                + extra
                + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
            )
            status, headers, body = parseResponse(raw)
            self.assertEqual(status, 403, extra)
            self.assertEqual(json.loads(body)["error"]["type"], "permission_error")
            self.assertFalse(
                [name for name in headers if name.startswith(b"access-control-")]
            )
        self.assertEqual(anthropicMock.requests, [])

    async def test_absoluteFormTarget(self) -> None:
        """
        S10: an absolute-form target cannot make the proxy pick the host.
        """
        anthropicMock = self.upstream()
        proxy = await self.proxy(f'default: {{url: "{anthropicMock.url}"}}\n')
        raw = await self.rawRequest(
            proxy,
            b"POST http://evil.example/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )
        status, _, body = parseResponse(raw)
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["error"]["type"], "invalid_request_error")
        self.assertEqual(anthropicMock.requests, [])


class AnthropicSDKTests(EndToEndCase):
    async def test_sdkStreamsThroughProxy(self) -> None:
        """
        The official SDK streams a message through ccrouter, on the routed
        and on the passthrough upstream, and reads a non-streaming one.
        """
        anthropicMock = self.upstream()
        zaiMock = self.upstream()
        anthropicMock.behaviour = respondEvents(
            anthropicStream("passthrough says hi"), spacing=0.005
        )
        zaiMock.behaviour = respondEvents(
            anthropicStream("routed says hi", model="glm-4.5-air"), spacing=0.005
        )
        proxy = await self.routedProxy(anthropicMock, zaiMock)

        def useSDK() -> tuple[str, str, str, str]:
            with anthropic.Anthropic(
                base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                results = []
                for model in ("claude-haiku-4-5", "claude-sonnet-4-5"):
                    with client.messages.stream(
                        model=model,
                        max_tokens=1024,
                        messages=[{"role": "user", "content": "hi"}],
                    ) as stream:
                        text = "".join(stream.text_stream)
                        final = stream.get_final_message()
                    results += [text, final.model]
                return results[0], results[1], results[2], results[3]

        routedText, routedModel, passText, passModel = await deferToThread(useSDK)
        self.assertEqual(routedText, "routed says hi ")
        self.assertEqual(routedModel, "glm-4.5-air")
        self.assertEqual(passText, "passthrough says hi ")
        self.assertEqual(passModel, "claude-sonnet-4-5")
        self.assertEqual(zaiMock.requests[0].json()["model"], "glm-4.5-air")
        # This SDK sends its key as a bearer token.
        clientAuthorization = [b"Bearer " + CLIENT_KEY.encode()]
        self.assertEqual(zaiMock.requests[0].header(b"x-api-key"), [ZAI_KEY.encode()])
        self.assertEqual(zaiMock.requests[0].header(b"authorization"), [])
        self.assertEqual(
            anthropicMock.requests[0].header(b"authorization"), clientAuthorization
        )

        zaiMock.behaviour = respondJSON(anthropicMessage("plain", model="glm-4.5-air"))

        def createMessage() -> str:
            with anthropic.Anthropic(
                base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                message = client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}],
                )
                block = message.content[0]
                assert block.type == "text"
                return block.text

        self.assertEqual(await deferToThread(createMessage), "plain")

    async def test_sdkSeesProxyErrors(self) -> None:
        """
        The SDK raises the error type matching the status ccrouter sends.
        """
        proxy = await self.proxy(
            f'routes: [{{match: haiku, upstream: {{url: "http://127.0.0.1:{freePort()}"}}}}]\n'
        )

        def call() -> Any:
            with anthropic.Anthropic(
                base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                try:
                    client.messages.create(
                        model="claude-haiku-4-5",
                        max_tokens=10,
                        messages=[{"role": "user", "content": "hi"}],
                    )
                except anthropic.APIStatusError as e:
                    return e.status_code, e.body
            return None

        status, body = await deferToThread(call)
        self.assertEqual(status, 502)
        self.assertEqual(body["error"]["type"], "api_error")


def echoingStream(request: Any) -> int:
    """
    An Anthropic stream of 20 events, 10 ms apart, naming the request's
    C{x-test-id} in its first event and in each text delta.
    """
    ident = (request.getHeader(b"x-test-id") or b"none").decode()
    events = anthropicStream(" ".join([ident] * 18), model=ident)
    return respondEvents(events, spacing=0.01)(request)


class ClientAbortTests(EndToEndCase):
    async def test_abortsDoNotMixResponses(self) -> None:
        """
        F16: 100 streams aborted by their clients after the first event,
        then 100 streams read to the end, ten at a time over the proxy's
        pooled upstream connections: every response carries its own
        request's id and no other.
        """
        mock = self.upstream(echoingStream)
        proxy = await self.proxy(f'default: {{url: "{mock.url}"}}\n')
        found: dict[bytes, set[bytes]] = {}

        async def aborted(ident: bytes) -> None:
            response = await self.post(
                proxy, messageBody("claude-sonnet-4-5"), {b"x-test-id": [ident]}
            )
            first: defer.Deferred[None] = defer.Deferred()
            reader = EventReader(lambda event: first.called or first.callback(None))
            response.deliverBody(reader)
            await first.addTimeout(10, reactor)
            assert reader.transport is not None
            reader.transport.stopProducing()
            await self.assertFailure(reader.done, ResponseFailed)
            found[ident] = set(re.findall(rb"(?:abort|whole)-[0-9]+", reader.body))

        async def whole(ident: bytes) -> None:
            response = await self.post(
                proxy, messageBody("claude-sonnet-4-5"), {b"x-test-id": [ident]}
            )
            body = await response.content()
            self.assertTrue(body.endswith(anthropicStream("x")[-1]), body[-200:])
            found[ident] = set(re.findall(rb"(?:abort|whole)-[0-9]+", body))

        for kind, send in ((b"abort", aborted), (b"whole", whole)):
            for batch in range(10):
                await defer.gatherResults(
                    [
                        defer.ensureDeferred(send(b"%s-%d" % (kind, batch * 10 + i)))
                        for i in range(10)
                    ],
                    consumeErrors=True,
                )
        self.assertEqual(len(found), 200)
        self.assertEqual(
            {ident: ids for ident, ids in found.items() if ids != {ident}}, {}
        )
        self.assertEqual(len(mock.requests), 200)

    async def test_clientGoneDuringUpload(self) -> None:
        """
        F15: a client that goes away halfway through sending its body
        sends nothing upstream; the next request is served as usual.
        """
        mock = self.upstream()
        proxy = await self.proxy(f'default: {{url: "{mock.url}"}}\n')
        assert proxy.url is not None
        body = messageBody("claude-upload-abandoned", padding=200_000)
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body[: len(body) // 2]
        )
        client.transport.abortConnection()
        await client.closed
        response = await self.post(proxy, messageBody("claude-next", stream=False))
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual(
            [request.json()["model"] for request in mock.requests], ["claude-next"]
        )

    async def test_clientGoneDuringFailover(self) -> None:
        """
        F15: a client that goes away while its first target has not yet
        answered: that upstream request is closed at once and no other
        target is tried for it.
        """
        primaryMock = self.upstream(hang)
        fallbackMock = self.upstream()
        proxy = await self.proxy(
            f"""
default: {{url: "{fallbackMock.url}"}}
upstreams:
  primary: {{url: "{primaryMock.url}"}}
default_mode: auto
modes:
  auto: {{failover: [primary, claude]}}
  claude: []
"""
        )
        assert proxy.url is not None
        arrived = primaryMock.nextRequest()
        body = messageBody("claude-sonnet-4-5", stream=False)
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        await arrived.addTimeout(10, reactor)
        client.transport.abortConnection()
        await client.closed
        [upstreamGone] = primaryMock.disconnects
        await upstreamGone.addTimeout(2, reactor)
        response = await self.http.get(f"{proxy.url}/health")
        health = json.loads(await response.content())
        self.assertEqual(health["auto_switch"]["failovers"], 0)
        self.assertEqual(fallbackMock.requests, [])


class StartupTests(EndToEndCase):
    async def runTwistd(
        self, *arguments: str, environ: dict[str, str] | None = None
    ) -> ProxyProcess:
        process = ProxyProcess(list(arguments), environ)
        await process.run()
        return process

    def assertOneLineError(self, process: ProxyProcess, expected: str) -> None:
        self.assertNotEqual(process.exitCode, 0)
        self.assertEqual(process.stderr.decode(), expected + "\n")
        self.assertNotIn(b"Traceback", process.output)

    async def test_missingEnvironmentVariable(self) -> None:
        """
        C2: a config naming an unset variable refuses to start, with one line
        naming the variable (and file, line and key), never a value.
        """
        config = self.writeConfig(
            'routes:\n  - match: "claude-haiku"\n    upstream:\n'
            '      url: "https://api.z.ai/api/anthropic"\n      auth:\n'
            '        header: "x-api-key"\n        value: "${Z_AI_API_KEY}"\n'
        )
        process = await self.runTwistd("--config", str(config))
        self.assertOneLineError(
            process,
            f"{config}:7: routes[0].upstream.auth.value: environment variable"
            " Z_AI_API_KEY is not set",
        )

    async def test_unusableEnvironmentVariable(self) -> None:
        """
        C2: a variable that is set but empty, or holds a line break, refuses
        the start too, naming the variable and never its value.
        """
        config = self.writeConfig(
            'routes:\n  - match: "claude-haiku"\n    upstream:\n'
            '      url: "https://api.z.ai/api/anthropic"\n      auth:\n'
            '        header: "x-api-key"\n        value: "${Z_AI_API_KEY}"\n'
        )
        for value, problem in [
            ("", "is empty"),
            (ZAI_KEY + "\n", "holds a line break or NUL"),
        ]:
            process = await self.runTwistd(
                "--config", str(config), environ={"Z_AI_API_KEY": value}
            )
            self.assertOneLineError(
                process,
                f"{config}:7: routes[0].upstream.auth.value: environment variable"
                f" Z_AI_API_KEY {problem}",
            )
            self.assertNoCanaries(process.output)

    async def test_missingConfigFile(self) -> None:
        path = self.mktemp()
        process = await self.runTwistd("--config", path)
        self.assertOneLineError(
            process, f"{path}: cannot read: No such file or directory"
        )

    async def test_failedBind(self) -> None:
        occupied = socket.socket()
        self.addCleanup(occupied.close)
        occupied.bind(("127.0.0.1", 0))
        occupied.listen(1)
        port = occupied.getsockname()[1]
        process = await self.runTwistd("--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertOneLineError(
            process,
            f"ccrouter: cannot listen on tcp:{port}:interface=127.0.0.1: Couldn't"
            f" listen on 127.0.0.1:{port}: [Errno 98] Address already in use.",
        )

    async def test_exposedListenRefused(self) -> None:
        """
        S1: an address other machines can reach (here the wildcard, which
        is what C{tcp:PORT} without an interface means) is refused at start-up
        with one line, and the port is not left open; with
        C{server.allow_remote} and a token it is allowed.
        """
        for listen in ("tcp:0:interface=0.0.0.0", "tcp:0"):
            process = await self.runTwistd("--listen", listen)
            self.assertOneLineError(
                process,
                f"ccrouter: refusing to listen on 0.0.0.0 ({listen}): other machines"
                " could use your keys and login through it. Listen on 127.0.0.1"
                " or ::1, or set server.allow_remote: true together with"
                " server.token_file",
            )
        config = self.writeConfig(
            "server:\n"
            "  allow_remote: true\n"
            "  token: a-long-enough-local-token\n"
            "  listen: ['tcp:0:interface=0.0.0.0']\n"
        )
        process = ProxyProcess(["--config", str(config)])
        self.addCleanup(process.stop)
        url = await process.start()
        self.assertRegex(url, r"^http://0\.0\.0\.0:\d+$")

    async def test_twistRunner(self) -> None:
        """
        Twisted's newer runner, C{twist}, which never calls
        C{privilegedStartService}, serves the proxy too.
        """
        anthropicMock = self.upstream(respondJSON({"data": []}))
        process = ProxyProcess(
            [
                "--config",
                str(self.writeConfig(f'default: {{url: "{anthropicMock.url}"}}\n')),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            runner="twist",
        )
        self.addCleanup(process.stop)
        await process.start()
        response = await self.http.get(f"{process.url}/v1/models")
        self.assertEqual(json.loads(await response.content()), {"data": []})

    async def test_embeddedDefaultStartsAndStops(self) -> None:
        """
        Without --config the built-in default runs, and SIGTERM stops it
        cleanly: after its graceful stop the process exits with status 0.
        """
        process = ProxyProcess(["--listen", "tcp:0:interface=127.0.0.1"])
        await process.start()
        await process.stop()
        self.assertEqual((process.exitCode, process.exitSignal), (0, None))
        self.assertIn(b"listening on http://127.0.0.1:", process.stdout)
        self.assertIn(b"Server Shut Down.", process.stdout)
        self.assertNotIn(b"Traceback", process.output)
