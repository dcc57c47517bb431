"""
The parser harness of reliability.md (c): raw request bytes fed to the
real HTTP channel (L{ProxySite} over L{resourceTree} and a L{LiveState}) on
a L{StringTransport}, with a recording agent in place of the upstreams.
Used by the hypothesis property in L{tests.test_fuzz} (Z1) and by the
atheris driver C{benchmarks/fuzz_http.py}.

L{checkExchange} is the oracle: the answer starts with C{HTTP/1.1 } (or
C{HTTP/1.0 } for an HTTP/1.0 request, or there is none), and the upstream is reached only for well-formed requests
to allowed paths, with clean outbound headers and the right credentials.
"""

from __future__ import annotations

import inspect
import ipaddress
import itertools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from attrs import define
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import Request as WireRequest
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from ccrouter.config import Config, parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite

TOKEN = "fuzz-LOCAL-TOKEN-CANARY-0123456789"
PROVIDER_KEY = "zai-FUZZ-PROVIDER-CANARY-9f3a"
OPENAI_KEY = "sk-FUZZ-OPENAI-CANARY-77c1"
CLIENT_KEY = "sk-ant-api03-FUZZ-CLIENT-CANARY-1b2c"
WALL = 1795262400.0

#: Where each configured upstream is, as the agent is asked for it.
UPSTREAMS = {
    "default": ("http", "anthropic.test", 9, "/base"),
    "zai": ("http", "zai.test", 9, "/api/anthropic"),
    "oai": ("http", "oai.test", 9, "/v1"),
}


def harnessConfig(token: bool) -> Config:
    server = "server: {token: '${T}'}\n" if token else ""
    return parseConfig(
        server
        + """
default: {url: "http://anthropic.test:9/base"}
upstreams:
  zai:
    url: "http://zai.test:9/api/anthropic"
    auth: {header: x-api-key, value: "${ZKEY}"}
  oai:
    url: "http://oai.test:9/v1"
    format: openai
    auth: {header: authorization, value: "Bearer ${OKEY}"}
routes:
  - match: "claude-haiku"
    model: glm-4.5-air
    upstream: zai
  - match: "gpt-"
    upstream: oai
""",
        "fuzz.yaml",
        {"T": TOKEN, "ZKEY": PROVIDER_KEY, "OKEY": OPENAI_KEY},
    )


def buildSite(
    resource: IResource, live: LiveState, reactor: MemoryReactorClock
) -> ProxySite:
    """
    A L{ProxySite} over C{resource}, whichever way it takes its limits (a
    body limit callable, or the server settings).
    """
    limits: Callable[[], Any]
    parameters = list(inspect.signature(ProxySite.__init__).parameters)
    if parameters[2] == "maxBodyBytes":
        limits = lambda: live.config.server.maxBodyBytes  # noqa: E731
    else:
        limits = lambda: live.config.server  # noqa: E731
    return ProxySite(resource, limits, reactor=reactor)


@define
class SeenRequest:
    """
    A request as the resource tree received it.
    """

    method: bytes
    uri: bytes
    version: bytes
    headers: Headers


@define
class Forwarded:
    """
    One request the recording agent was asked to send.

    @ivar wire: The bytes Twisted's HTTP client writes for it (request line,
        headers and body); the agent adds only C{Host}.
    @ivar seen: The index in L{HTTPHarness.seen} of the client request being
        answered when it was sent.
    """

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes
    wire: bytes
    seen: int


@implementer(IPushProducer)
class _Producer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IResponse)
class CannedResponse:
    """
    An upstream response delivered on the next turn of the clock.
    """

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    previousResponse = None
    request = None

    def __init__(
        self, reactor: MemoryReactorClock, contentType: bytes, body: bytes
    ) -> None:
        self._reactor = reactor
        self.code = 200
        self.headers = Headers({b"content-type": [contentType]})
        self._body = body
        self.length = (
            UNKNOWN_LENGTH if contentType == b"text/event-stream" else len(body)
        )

    def deliverBody(self, protocol: Protocol) -> None:
        def deliver() -> None:
            protocol.makeConnection(_Producer())  # type: ignore[arg-type]
            protocol.dataReceived(self._body)
            protocol.connectionLost(Failure(ResponseDone()))

        self._reactor.callLater(0, deliver)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


@implementer(IConsumer)
class _Collector:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


ANTHROPIC_STREAM = b"".join(
    b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps({"type": name}).encode())
    for name in ("message_start", "ping", "message_stop")
)
OPENAI_STREAM = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_ANSWER = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
).encode()


class RecordingAgent:
    """
    Records every request it is asked to send, serialised by Twisted's own
    HTTP client, and answers it with a short, complete response in the
    format the upstream speaks.
    """

    def __init__(self, reactor: MemoryReactorClock, current: Callable[[], int]):
        self._reactor = reactor
        self._current = current
        self.forwarded: list[Forwarded] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        headers = Headers() if headers is None else headers
        body = _Collector()
        if bodyProducer is not None:
            bodyProducer.startProducing(body)
        wire = StringTransport()
        # As Agent does: Host from the URL, unless the caller set one.
        wireHeaders = headers.copy()
        if not wireHeaders.hasHeader(b"host"):
            wireHeaders.setRawHeaders(b"host", [urlsplit(uri).netloc or b"?"])
        WireRequest(method, uri, wireHeaders, bodyProducer).writeTo(wire)
        self.forwarded.append(
            Forwarded(
                method, uri, headers.copy(), body.data, wire.value(), self._current()
            )
        )
        streaming = b'"stream":true' in body.data.replace(b" ", b"")
        if uri.split(b"?")[0].endswith(b"/chat/completions"):
            answer = (
                (b"text/event-stream", OPENAI_STREAM)
                if streaming
                else (b"application/json", OPENAI_ANSWER)
            )
        elif streaming:
            answer = (b"text/event-stream", ANTHROPIC_STREAM)
        else:
            answer = (b"application/json", b'{"type":"message","content":[]}')
        return succeed(CannedResponse(self._reactor, *answer))


class _Seeing(Resource):
    """
    Notes each request, then hands it to the real resource tree.
    """

    isLeaf = True

    def __init__(self, root: IResource, seen: list[SeenRequest]) -> None:
        super().__init__()
        self._root = root
        self._seen = seen

    def render(self, request: Request) -> Any:
        self._seen.append(
            SeenRequest(
                request.method,
                request.uri,
                request.clientproto,
                request.requestHeaders.copy(),
            )
        )
        return self._root.render(request)


def pieces(raw: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(raw)}), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


class HTTPHarness:
    """
    One client connection to a fresh ccrouter, in memory.
    """

    def __init__(self, token: bool = False) -> None:
        self.reactor = MemoryReactorClock()
        self.token = token
        self.live = LiveState(
            harnessConfig(token),
            now=self.reactor.seconds,
            wallNow=lambda: WALL + self.reactor.seconds(),
        )
        self.seen: list[SeenRequest] = []
        self.agent = RecordingAgent(self.reactor, lambda: len(self.seen) - 1)
        root = resourceTree(self.live, lambda upstream: self.agent, self.reactor)
        self.site = buildSite(_Seeing(root, self.seen), self.live, self.reactor)

    def feed(self, raw: bytes, cuts: Sequence[int] = ()) -> bytes:
        """
        Send C{raw} in pieces cut at C{cuts}, let every timer run out, and
        close the connection; return everything the client received.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert channel is not None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        channel.makeConnection(transport)
        for piece in pieces(raw, cuts):
            if transport.disconnecting:
                # A real transport stops reading once it is closing.
                break
            channel.dataReceived(piece)
            self.reactor.advance(0)
        # Every client deadline (headers, body, keep-alive) runs out.
        for step in (0, 0, 11, 31, 76, 121, 301):
            self.reactor.advance(step)
        if not transport.disconnected:
            channel.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(0)
        return transport.value()


# The oracle

#: Never sent upstream as the client sent them (RFC 9110 7.6.1, and the
#: headers the HTTP client computes itself).
_NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"x-ccrouter-token",
    }
)
_CLIENT_CREDENTIALS = (b"authorization", b"x-api-key", b"cookie")


def _isLoopbackHost(value: bytes) -> bool:
    match = re.fullmatch(
        rb"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::[0-9]*)?", value
    )
    if match is None:
        return False
    name = (match.group(1) or match.group(2)).decode().lower()
    if name in ("localhost", "localhost.", "ip6-localhost") or name.endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _cleanTarget(target: bytes) -> bool:
    """
    A plain origin-form target that cannot leave an upstream's base path.
    """
    path = target.split(b"?", 1)[0]
    if not path.startswith(b"/") or path.startswith(b"//"):
        return False
    if re.search(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@%/?]", target):
        return False
    lowered = path.lower()
    if re.search(rb"%(?:2f|5c|00)", lowered):
        return False
    segments = lowered.replace(b"%2e", b".").split(b"/")
    return not any(segment in (b".", b"..") for segment in segments)


def _headerBlock(raw: bytes, seen: SeenRequest) -> bytes | None:
    """
    The raw header section that follows the request line C{seen} was read
    from, if that line ends in CR LF as it must.
    """
    line = b"%s %s %s\r\n" % (seen.method, seen.uri, seen.version)
    start = raw.find(line)
    if start < 0:
        return None
    start += len(line)
    end = raw.find(b"\r\n\r\n", start - 2)
    return raw[start : len(raw) if end < 0 else end + 2]


def _wellFormed(raw: bytes, seen: SeenRequest, token: bool) -> list[str]:
    """
    What is wrong with a request the upstream received, judged from the
    client's raw bytes and from what the resource tree saw.
    """
    problems = []
    block = _headerBlock(raw, seen)
    if block is None:
        return ["its request line does not end in CR LF"]
    if len(seen.method) + len(seen.uri) + 11 > 8192:
        problems.append("its request line is over 8 KiB")
    if b"\x00" in block:
        problems.append("NUL in its headers")
    if re.search(rb"(?<!\r)\n|\r(?!\n)", block):
        problems.append("a bare CR or LF in its headers")
    names = [
        line.split(b":", 1)[0].lower()
        for line in block.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    if names.count(b"content-length") > 1:
        problems.append("two Content-Length headers")
    if b"content-length" in names and b"transfer-encoding" in names:
        problems.append("both Content-Length and Transfer-Encoding")
    if any(not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) for name in names):
        problems.append("a header name that is not a token")
    if len(names) > 100:
        problems.append("over 100 header fields")
    hosts = seen.headers.getRawHeaders(b"host", [])
    if len(hosts) != 1 or not _isLoopbackHost(hosts[0].strip()):
        problems.append(f"Host {hosts!r}")
    if seen.headers.hasHeader(b"origin"):
        problems.append("an Origin header")
    if token and seen.headers.getRawHeaders(b"x-ccrouter-token") != [TOKEN.encode()]:
        problems.append("no valid local token")
    if not _cleanTarget(seen.uri):
        problems.append(f"target {seen.uri!r}")
    if seen.method not in (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"):
        problems.append(f"method {seen.method!r}")
    return problems


def _outbound(forwarded: Forwarded, seen: SeenRequest | None) -> list[str]:
    """
    What is wrong with a request as it was sent upstream.
    """
    problems = []
    url = urlsplit(forwarded.uri.decode("ascii", "replace"))
    where = None
    for name, (scheme, host, port, base) in UPSTREAMS.items():
        if (url.scheme, url.hostname, url.port) == (scheme, host, port):
            where = name
            if not url.path.startswith(base + "/"):
                problems.append(f"path {url.path!r} outside {base}")
    if where is None or url.username or url.password or url.fragment:
        problems.append(f"URL {forwarded.uri!r}")
    authority = forwarded.uri.find(b"/", forwarded.uri.find(b"://") + 3)
    target = forwarded.uri[authority:] if authority >= 0 else b""
    if not _cleanTarget(target):
        problems.append(f"target {target!r}")
    names = {name.lower() for name, _ in forwarded.headers.getAllRawHeaders()}
    sentNames = set(names)
    if seen is not None:
        for value in seen.headers.getRawHeaders(b"connection", []):
            for listed in value.split(b","):
                listed = listed.strip().lower()
                if (
                    listed
                    and listed not in (b"keep-alive", b"close")
                    and listed in names
                ):
                    problems.append(f"{listed!r}, named in Connection, was forwarded")
    forbidden = sentNames & _NOT_FORWARDED
    if forbidden:
        problems.append(f"forwarded {sorted(forbidden)!r}")
    for name, values in forwarded.headers.getAllRawHeaders():
        for value in values:
            if re.search(rb"[\r\n\x00]", value):
                problems.append(f"control character in {name!r}")
    head, _, _ = forwarded.wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]
    lengths = [line for line in lines if line.lower().startswith(b"content-length:")]
    if forwarded.body and lengths != [b"Content-Length: %d" % len(forwarded.body)]:
        problems.append(f"framing {lengths!r} for {len(forwarded.body)} bytes")
    if len(lengths) > 1:
        problems.append("two Content-Length headers")
    if any(line.lower().startswith(b"transfer-encoding:") for line in lines):
        problems.append("Transfer-Encoding sent")
    if any(line[:1] in (b" ", b"\t") for line in lines):
        problems.append("a folded header line sent")
    # The head only: a body may quote anything.
    wire = head
    # The token's value may only go on where the client put it under
    # another header's name (its own business, like any header).
    elsewhere = 0
    if seen is not None:
        for name, values in seen.headers.getAllRawHeaders():
            if name.lower() != b"x-ccrouter-token":
                elsewhere += sum(value.count(TOKEN.encode()) for value in values)
    if wire.count(TOKEN.encode()) > elsewhere:
        problems.append("the local token was forwarded")
    if where == "zai":
        if forwarded.headers.getRawHeaders(b"x-api-key") != [PROVIDER_KEY.encode()]:
            problems.append("the provider did not get exactly its key")
    if where in ("zai", "oai"):
        # The client's own credential headers; a key it puts in a header of
        # another name is its own business, passed on like any header.
        other = b"authorization" if where == "zai" else b"x-api-key"
        if forwarded.headers.hasHeader(other):
            problems.append("a client credential reached a provider")
        if forwarded.headers.hasHeader(b"cookie"):
            problems.append("a cookie reached a provider")
    if where == "oai" and forwarded.headers.getRawHeaders(b"authorization") != [
        b"Bearer " + OPENAI_KEY.encode()
    ]:
        problems.append("the OpenAI upstream did not get exactly its key")
    if where == "default" and (
        PROVIDER_KEY.encode() in wire or OPENAI_KEY.encode() in wire
    ):
        problems.append("a provider key reached Anthropic")
    return problems


def checkExchange(harness: HTTPHarness, raw: bytes, output: bytes) -> list[str]:
    """
    Everything wrong with what C{raw} made ccrouter answer and forward.
    """
    problems = []
    # Twisted answers an HTTP/1.0 request in kind.
    if output and not re.match(rb"HTTP/1\.[01] [1-5][0-9][0-9] ", output):
        problems.append(f"the answer starts with {output[:20]!r}")
    if output.startswith(b"HTTP/1.0 ") and b" HTTP/1.0" not in raw:
        problems.append("an HTTP/1.0 answer to a request that is not HTTP/1.0")
    for secret in (PROVIDER_KEY, OPENAI_KEY):
        if secret.encode() in output:
            problems.append("a provider key reached the client")
    for forwarded in harness.agent.forwarded:
        seen = harness.seen[forwarded.seen] if forwarded.seen >= 0 else None
        if seen is None:
            problems.append("forwarded with no request")
            continue
        for problem in _wellFormed(raw, seen, harness.token) + _outbound(
            forwarded, seen
        ):
            problems.append(f"{seen.method!r} {seen.uri[:60]!r} forwarded: {problem}")
    return problems


# Seeds and mutations


def _claudeCode(
    model: str, stream: bool, path: bytes = b"/v1/messages?beta=true"
) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "hi ☃"}],
            "max_tokens": 32000,
            "stream": stream,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return (
        b"POST %s HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8080\r\n"
        b"Accept: application/json\r\n"
        b"Content-Type: application/json\r\n"
        b"User-Agent: claude-cli/2.1.3 (external, cli)\r\n"
        b"anthropic-version: 2023-06-01\r\n"
        b"anthropic-beta: claude-code-20250219\r\n"
        b"x-api-key: %s\r\n"
        b"x-ccrouter-token: %s\r\n"
        b"Connection: keep-alive\r\n"
        b"Content-Length: %d\r\n\r\n"
        % (path, CLIENT_KEY.encode(), TOKEN.encode(), len(body))
    ) + body


_GET = b"Host: 127.0.0.1\r\nx-ccrouter-token: %s\r\n\r\n" % TOKEN.encode()

#: reliability.md appendix A, and requests Claude Code really sends.
SEEDS = [
    _claudeCode("claude-sonnet-4-5", True),
    _claudeCode("claude-haiku-4-5", False),
    _claudeCode("gpt-4o", True),
    _claudeCode("gpt-4o", False),
    _claudeCode("claude-sonnet-4-5", False, b"/v1/messages/count_tokens?beta=true"),
    b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /v1/models?limit=1000 HTTP/1.1\r\n" + _GET,
    b"POST http://169.254.169.254/v1/messages HTTP/1.1\r\n" + _GET,
    b"POST @evil.example/v1/messages HTTP/1.1\r\n" + _GET,
    b"POST v1/messages HTTP/1.1\r\n" + _GET,
    b"POST /v1/messages#frag HTTP/1.1\r\n" + _GET,
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +2\r\n\r\n{}",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
    b"\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Foo: a\r\n b\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Foo: a\x00b\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length : 2\r\n\r\n{}",
    b"GET /v1/models HTTP/1.1\nHost: 127.0.0.1\n\n",
    b"GET /v1/models HTTP/1.1\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
    b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
    b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\n" + _GET,
    b"GET /v1/%2e%2e/x HTTP/1.1\r\n" + _GET,
    b"GET /\\evil HTTP/1.1\r\n" + _GET,
    b"GET * HTTP/1.1\r\n" + _GET,
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    + b"a" * 17000
    + b"\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(120))
    + b"\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
    b"\r\nContent-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example"
    b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    b"OPTIONS /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Access-Control-Request-Method: POST\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, X-Hop, "
    b"x-api-key\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
    b"Proxy-Authorization: Basic eA==\r\nx-ccrouter-token: %s\r\n\r\n" % TOKEN.encode(),
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    + _claudeCode("claude-haiku-4-5", True),
    b"GET /v1/models HTTP/1.0\r\nHost: [::1]:8080\r\nx-ccrouter-token: %s\r\n\r\n"
    % TOKEN.encode(),
]

_FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"\r\n ",
    b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Host: evil.example\r\n",
    b"Host: 127.0.0.1\r\n",
    b"Origin: null\r\n",
    b"Sec-Fetch-Site: cross-site\r\n",
    b"Connection: x-ccrouter-token, x-api-key\r\n",
    b"x-ccrouter-token: wrong\r\n",
    b"Authorization: Bearer sk-ant-oat01-FUZZ\r\n",
    b"Cookie: a=b\r\n",
    b"%2e%2e/",
    b"/../",
    b"%2F",
    b"?",
    b"#",
    b"//",
    b"http://evil.example",
    b"0\r\n\r\n",
    b"\xff\xfe",
    b"\xe2\x98",
    b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
]


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    for _ in range(data.draw(st.integers(0, 4), label="mutations")):
        kind = data.draw(
            st.sampled_from(
                ["insert", "delete", "replace", "repeatLine", "endings", "length"]
            ),
            label="mutation",
        )
        position = data.draw(st.integers(0, len(raw)), label="at")
        if kind == "insert":
            fragment = data.draw(
                st.one_of(
                    st.sampled_from(_FRAGMENTS), st.binary(min_size=1, max_size=6)
                ),
                label="fragment",
            )
            raw = raw[:position] + fragment + raw[position:]
        elif kind == "delete":
            size = data.draw(st.integers(1, 16), label="size")
            raw = raw[:position] + raw[position + size :]
        elif kind == "replace" and position < len(raw):
            byte = data.draw(st.integers(0, 255), label="byte")
            raw = raw[:position] + bytes([byte]) + raw[position + 1 :]
        elif kind == "repeatLine":
            lines = raw.split(b"\r\n")
            index = data.draw(st.integers(0, len(lines) - 1), label="line")
            lines.insert(index, lines[index])
            raw = b"\r\n".join(lines)
        elif kind == "endings":
            ending = data.draw(st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
            head, separator, body = raw.partition(b"\r\n\r\n")
            if data.draw(st.booleans(), label="all"):
                head = head.replace(b"\r\n", ending)
            else:
                head = head.replace(b"\r\n", ending, 1)
            raw = head + separator + body
        elif kind == "length":
            value = data.draw(
                st.sampled_from([b"0", b"1", b"99999", b"-1", b"1e3", b"0x10", b" 7"])
            )
            raw = re.sub(
                rb"(?i)(content-length:)[^\r\n]*", rb"\g<1> " + value, raw, count=1
            )
    return raw


@st.composite
def mutatedRequests(draw: Any) -> tuple[bytes, list[int]]:
    """
    A seed (or two, pipelined) with mutations, and where to cut it into
    the pieces the channel receives.
    """
    data = draw(st.data())
    raw = draw(st.sampled_from(SEEDS), label="seed")
    if draw(st.integers(0, 9), label="pipelined") == 0:
        raw += draw(st.sampled_from(SEEDS), label="second seed")
    raw = _mutate(raw, data)
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=6), label="cuts")
    return raw, cuts


def fuzzOneInput(raw: bytes, harness: HTTPHarness | None = None) -> list[str]:
    """
    Feed C{raw} whole to a fresh harness (with a local token when its first
    byte is odd) and return what the oracle finds wrong.
    """
    if harness is None:
        harness = HTTPHarness(token=bool(raw[:1]) and raw[0] % 2 == 1)
    output = harness.feed(raw)
    return checkExchange(harness, raw, output)
