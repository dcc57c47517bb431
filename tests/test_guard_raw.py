"""
The request guard and the header filters seen from outside: raw requests
over a real socket to ccrouter's own site and resource tree, running in this
process, in front of recording mock upstreams (which keep every byte they
receive) and decoy listeners that no request may ever reach.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from ccrouter.agents import PooledAgents
from ccrouter.config import parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
from tests.mockupstream import (
    Behaviour,
    MockUpstream,
    anthropicMessage,
    respondJSON,
)
from tests.rawclient import rawConnect

CLIENT_OAUTH = "sk-ant-oat01-RAW-CLIENT-OAUTH-CANARY-1a2b"
CLIENT_KEY = "sk-ant-api03-RAW-CLIENT-KEY-CANARY-3c4d"
CLIENT_COOKIE = "session=RAW-CLIENT-COOKIE-CANARY-5e6f"
LOCAL_TOKEN = "local-RAW-TOKEN-CANARY-7a8b9c0d"
ZAI_KEY = "zai-RAW-PROVIDER-CANARY-1111"
KIMI_KEY = "kimi-RAW-PROVIDER-CANARY-2222"
CLIENT_CANARIES = (CLIENT_OAUTH, CLIENT_KEY, CLIENT_COOKIE, LOCAL_TOKEN)

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
INVALID = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "from the upstream"},
}

CONFIG = """
default: {{url: "{anthropic}"}}
upstreams:
  zai:
    url: "{zai}/api/anthropic"
    auth: {{header: x-api-key, value: "${{ZAI_KEY}}"}}
  kimi:
    url: "{kimi}/anthropic"
    auth: {{header: Authorization, value: "Bearer ${{KIMI_KEY}}"}}
default_mode: claude
modes:
  claude: []
  glm:
    - {{match: "claude-*", model: "glm-4.6", upstream: zai}}
  moonshot:
    - {{match: "claude-*", model: "kimi-k2", upstream: kimi}}
  anthropic-first: {{failover: [claude, glm]}}
  providers: {{failover: [glm, moonshot]}}
{extra}"""


def message(model: str = "claude-sonnet-4-5", **extra: Any) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
            **extra,
        },
        separators=(",", ":"),
    ).encode()


def post(
    body: bytes,
    *headers: tuple[bytes, bytes],
    target: bytes = b"/v1/messages?beta=true",
    contentType: bytes | None = b"application/json",
) -> bytes:
    """
    A raw C{POST} from a loopback client that closes after the response.
    """
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if contentType is not None:
        lines.append(b"Content-Type: " + contentType)
    lines += [name + b": " + value for name, value in headers]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bare(method: bytes, target: bytes, *lines: bytes) -> bytes:
    """
    A raw request with exactly the header lines given, then C{Connection:
    close}.
    """
    return b"\r\n".join(
        [method + b" " + target + b" HTTP/1.1", *lines, b"Connection: close"]
    ) + (b"\r\n\r\n")


def parseResponse(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """
    Status, header fields and body of the final response in C{raw}, after
    any C{100 Continue}.
    """
    while raw.startswith(b"HTTP/1.1 100 "):
        raw = raw.partition(b"\r\n\r\n")[2]
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, raw
    statusLine, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return int(statusLine.split()[1]), headers, body


def values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def rawRequests(raw: bytes) -> list[tuple[bytes, list[tuple[bytes, bytes]], bytes]]:
    """
    The requests in the bytes one upstream connection received, as request
    line, header fields in order, and body (framed by C{Content-Length};
    anything else fails the test).
    """
    found = []
    while raw:
        head, separator, raw = raw.partition(b"\r\n\r\n")
        assert separator, head
        requestLine, *lines = head.split(b"\r\n")
        headers = []
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and name == name.strip(), line
            headers.append((name.lower(), value.strip()))
        lengths = values(headers, b"content-length")
        assert len(lengths) <= 1, lengths
        length = int(lengths[0]) if lengths else 0
        found.append((requestLine, headers, raw[:length]))
        raw = raw[length:]
    return found


class GuardedProxyCase(TestCase):
    """
    Three recording upstreams (Anthropic, two providers), two decoys, and
    ccrouter on 127.0.0.1:0 in this process.
    """

    timeout = 60
    extraConfig = ""
    mode: str | None = None

    async def setUp(self) -> None:  # type: ignore[override]
        self.anthropic = self.upstream(respondJSON(anthropicMessage("anthropic")))
        self.zai = self.upstream(respondJSON(anthropicMessage("zai")))
        self.kimi = self.upstream(respondJSON(anthropicMessage("kimi")))
        self.decoys = [self.upstream(respondJSON({})) for _ in range(2)]
        self.config = parseConfig(
            CONFIG.format(
                anthropic=self.anthropic.url,
                zai=self.zai.url,
                kimi=self.kimi.url,
                extra=self.extraConfig,
            ),
            "guard.yaml",
            {"ZAI_KEY": ZAI_KEY, "KIMI_KEY": KIMI_KEY},
        )
        self.live = LiveState(self.config, now=time.monotonic, wallNow=time.time)
        if self.mode is not None:
            self.useMode(self.mode)
        agents = PooledAgents(reactor)
        self.addCleanup(agents.stopService)
        site = ProxySite(
            resourceTree(self.live, agents.agentFor, reactor),
            lambda: self.live.config.server,
            reactor=reactor,
        )
        site.noisy = False
        self.port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def upstream(self, behaviour: Behaviour) -> MockUpstream:
        mock = MockUpstream(behaviour).listen()
        self.addCleanup(mock.stop)
        return mock

    def useMode(self, name: str) -> None:
        self.live.applyModeFile(name.encode() + b"\n")
        self.assertEqual(self.live.modeName, name)

    @property
    def upstreams(self) -> list[MockUpstream]:
        return [self.anthropic, self.zai, self.kimi, *self.decoys]

    async def send(
        self, request: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """
        Send raw bytes on a new connection; the response ccrouter gives
        before closing it.  Whatever ccrouter answers, it sends no CORS
        header.
        """
        client = await rawConnect(self.port.getHost().port)
        client.transport.write(request)
        await client.closed.addTimeout(20, reactor)
        status, headers, body = parseResponse(client.received)
        self.assertEqual(
            [name for name, _ in headers if name.startswith(b"access-control-")],
            [],
        )
        return status, headers, body

    async def refused(
        self, request: bytes, status: int, kind: str
    ) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
        """
        Send C{request}; check that ccrouter answered C{status} with an
        Anthropic error of type C{kind}, told the client not to retry it
        (Claude Code retries a bare 401 for three minutes), and that no
        upstream or decoy got as much as a connection.
        """
        got, headers, body = await self.send(request)
        self.assertEqual(got, status, request[:200])
        self.assertEqual(values(headers, b"content-type"), [b"application/json"])
        self.assertEqual(values(headers, b"x-should-retry"), [b"false"])
        error = json.loads(body)
        self.assertEqual(error["type"], "error")
        self.assertEqual(error["error"]["type"], kind, request[:200])
        self.assertNoUpstreamContacted()
        return headers, error

    def assertNoUpstreamContacted(self) -> None:
        self.assertEqual(
            [len(mock.rawConnections) for mock in self.upstreams],
            [0] * len(self.upstreams),
        )

    def assertDecoysUntouched(self) -> None:
        for decoy in self.decoys:
            self.assertEqual(decoy.rawConnections, [])

    def decoyAuthority(self, index: int = 0) -> bytes:
        return b"127.0.0.1:%d" % self.decoys[index].portNumber

    def logText(self) -> str:
        return "\n".join(formatEvent(event) or "" for event in self.events)


class HostTests(GuardedProxyCase):
    async def test_foreignHost(self) -> None:
        """
        S2: a Host naming another machine (DNS rebinding) gets 403, no Host
        or two Host headers 400; no upstream is contacted.
        """
        port = b"%d" % self.port.getHost().port
        for host in [b"attacker.example:" + port, b"127.0.0.1.nip.io:" + port]:
            await self.refused(
                bare(b"GET", b"/v1/models", b"Host: " + host), 403, "permission_error"
            )
            await self.refused(
                bare(b"GET", b"/health", b"Host: " + host), 403, "permission_error"
            )
        for lines in [
            (),
            (b"Host: 127.0.0.1", b"Host: 127.0.0.1"),
            (b"Host: 127.0.0.1", b"Host: attacker.example"),
        ]:
            await self.refused(
                bare(b"GET", b"/v1/models", *lines), 400, "invalid_request_error"
            )

    async def test_wrongPortIsNoAuthority(self) -> None:
        """
        S2: a loopback name with another port (here a decoy's) is served, and
        served by the configured upstream: the port in Host chooses nothing.
        """
        status, _, _ = await self.send(
            bare(b"GET", b"/v1/models", b"Host: " + self.decoyAuthority())
        )
        self.assertEqual(status, 200)
        [received] = self.anthropic.requests
        self.assertEqual(
            received.header(b"host"), [b"127.0.0.1:%d" % self.anthropic.portNumber]
        )
        self.assertDecoysUntouched()


class BrowserTests(GuardedProxyCase):
    async def test_originAndCrossSite(self) -> None:
        """
        S3: C{Origin: https://evil.example}, C{Origin: null} and
        C{Sec-Fetch-Site: cross-site} get 403 on C{/v1/messages} and on
        C{/health} (ccrouter has no mode-switch endpoint: the mode is a file).
        """
        for header in [
            (b"Origin", b"https://evil.example"),
            (b"Origin", b"null"),
            (b"Sec-Fetch-Site", b"cross-site"),
            (b"Sec-Fetch-Site", b"same-site"),
        ]:
            await self.refused(post(message(), header), 403, "permission_error")
            await self.refused(
                bare(b"GET", b"/health", b"Host: localhost", b": ".join(header)),
                403,
                "permission_error",
            )

    async def test_simpleRequestRefused(self) -> None:
        """
        S4: the bodies a page may send without a preflight get 415.
        """
        for contentType in [
            b"text/plain",
            b"text/plain;charset=UTF-8",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            None,
        ]:
            await self.refused(
                post(message(), contentType=contentType), 415, "invalid_request_error"
            )
        await self.refused(
            post(message(), contentType=b"text/plain", target=b"/v1/complete"),
            415,
            "invalid_request_error",
        )

    async def test_preflightRefused(self) -> None:
        """
        S5: a CORS preflight gets 405 with C{Allow} and no CORS header.
        """
        headers, _ = await self.refused(
            bare(
                b"OPTIONS",
                b"/v1/messages",
                b"Host: 127.0.0.1:8080",
                b"Origin: https://evil.example",
                b"Access-Control-Request-Method: POST",
                b"Access-Control-Request-Headers: content-type,x-api-key",
            ),
            405,
            "invalid_request_error",
        )
        self.assertEqual(values(headers, b"allow"), [b"POST"])
        headers, _ = await self.refused(
            bare(b"OPTIONS", b"*", b"Host: 127.0.0.1"), 405, "invalid_request_error"
        )
        self.assertEqual(
            values(headers, b"allow"), [b"GET, HEAD, POST, PUT, PATCH, DELETE"]
        )


class MethodTests(GuardedProxyCase):
    async def test_neverAForwardProxy(self) -> None:
        """
        S12: C{CONNECT} (to a decoy), C{TRACE}, C{GET /v1/messages} and
        C{HEAD /v1/messages} get 405 with C{Allow}.
        """
        cases = [
            (b"CONNECT", self.decoyAuthority(), b"GET, HEAD, POST, PUT, PATCH, DELETE"),
            (b"TRACE", b"/v1/models", b"GET, HEAD, POST, PUT, PATCH, DELETE"),
            (b"GET", b"/v1/messages", b"POST"),
            (b"HEAD", b"/v1/messages?beta=true", b"POST"),
            (b"GET", b"/v1/messages/count_tokens", b"POST"),
        ]
        for method, target, allow in cases:
            client = await rawConnect(self.port.getHost().port)
            client.transport.write(
                bare(method, target, b"Host: " + self.decoyAuthority())
            )
            await client.closed.addTimeout(20, reactor)
            status, headers, body = parseResponse(client.received)
            self.assertEqual((status, values(headers, b"allow")), (405, [allow]))
            if method != b"HEAD":
                self.assertEqual(
                    json.loads(body)["error"]["type"], "invalid_request_error"
                )
            else:
                self.assertEqual(body, b"")
        self.assertNoUpstreamContacted()

    async def test_headHealth(self) -> None:
        """
        S12: C{HEAD /health} gives 200 and no body.
        """
        status, headers, body = await self.send(
            bare(b"HEAD", b"/health", b"Host: localhost")
        )
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(values(headers, b"content-type"), [b"application/json"])
        self.assertNoUpstreamContacted()


class TargetTests(GuardedProxyCase):
    async def test_requestTargetsCannotChooseTheHost(self) -> None:
        """
        S10: absolute-form, authority-form, C{@host}, C{//host}, relative,
        dot-segment, encoded-slash, backslash and asterisk targets, aimed
        at decoy listeners, get 400; neither a decoy nor an upstream gets a
        connection.
        """
        decoy = self.decoyAuthority()
        targets = [
            b"http://" + decoy + b"/v1/messages",
            b"http://169.254.169.254/v1/messages",
            b"@" + decoy + b"/v1/messages",
            b"//" + decoy + b"/v1/messages",
            b"v1/messages",
            b"/v1/messages/../../x",
            b"/v1/%2e%2e/",
            b"/v1/%2fx",
            b"/\\" + decoy,
            b"/v1/messages#" + decoy,
            b"/v1/%00",
            b"*",
            decoy,
        ]
        for target in targets:
            _, error = await self.refused(
                post(message(), target=target), 400, "invalid_request_error"
            )
            self.assertNotIn(decoy.decode(), error["error"]["message"])
        self.assertDecoysUntouched()

    async def test_bodyCannotChooseTheHost(self) -> None:
        """
        S11: body fields that look like upstream overrides, naming a decoy,
        change nothing: the request goes where its model routes it, on the
        Anthropic route byte for byte.
        """
        decoy = "http://" + self.decoyAuthority().decode()
        body = message(
            api_base=decoy,
            base_url=decoy,
            extra_headers={"x-api-key": "x"},
            upstream={"url": decoy},
        )
        status, _, _ = await self.send(post(body))
        self.assertEqual(status, 200)
        [received] = self.anthropic.requests
        self.assertEqual(received.body, body)
        self.useMode("glm")
        status, _, _ = await self.send(post(body.replace(b"sonnet", b"haiku")))
        self.assertEqual(status, 200)
        [received] = self.zai.requests
        self.assertEqual(json.loads(received.body)["api_base"], decoy)
        self.assertEqual(received.header(b"x-api-key"), [ZAI_KEY.encode()])
        self.assertDecoysUntouched()

    async def test_noReflection(self) -> None:
        """
        H17: a path with markup is refused in JSON that does not repeat it;
        an unknown path gets the upstream's own answer.
        """
        status, headers, body = await self.send(
            bare(b"GET", b"/<script>alert(1)</script>", b"Host: localhost")
        )
        self.assertEqual(status, 400)
        self.assertEqual(values(headers, b"content-type"), [b"application/json"])
        self.assertNotIn(b"script", body)
        self.assertNoUpstreamContacted()

        notFound = {
            "type": "error",
            "error": {"type": "not_found_error", "message": "Not found"},
        }
        self.anthropic.behaviour = respondJSON(notFound, status=404)
        status, _, body = await self.send(
            bare(b"GET", b"/v1/%3Cscript%3Ealert(1)%3C/script%3E", b"Host: localhost")
        )
        self.assertEqual((status, json.loads(body)), (404, notFound))
        [received] = self.anthropic.requests
        self.assertEqual(received.uri, b"/v1/%3Cscript%3Ealert(1)%3C/script%3E")


def answerWith(
    headers: list[tuple[bytes, bytes]], status: int = 200, body: bytes = b"{}"
) -> Behaviour:
    def behaviour(request: Request) -> bytes:
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body

    return behaviour


class ResponseHeaderTests(GuardedProxyCase):
    async def test_upstreamCorsAndCookiesStripped(self) -> None:
        """
        S6: CORS headers, cookies and the upstream's C{Connection} never
        reach the client.  (Twisted's client keeps C{Connection} to itself,
        so a header an upstream names there cannot be told apart and is
        relayed: only the standard hop-by-hop ones are known.)
        """
        self.anthropic.behaviour = answerWith(
            [
                (b"content-type", b"application/json"),
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-expose-headers", b"request-id"),
                (b"set-cookie", b"__cf_bm=tracking; HttpOnly"),
                (b"set-cookie2", b"old=1"),
                (b"connection", b"x-internal"),
                (b"x-internal", b"hop"),
                (b"request-id", b"req_1"),
            ]
        )
        status, headers, body = await self.send(post(message()))
        self.assertEqual((status, body), (200, b"{}"))
        names = {name for name, _ in headers}
        for name in [b"set-cookie", b"set-cookie2"]:
            self.assertNotIn(name, names)
        self.assertEqual(values(headers, b"connection"), [b"close"])
        self.assertEqual(values(headers, b"request-id"), [b"req_1"])

    async def test_redirectsNeverFollowed(self) -> None:
        """
        S9: an upstream's redirect to a decoy, on the Anthropic route and on
        a keyed provider's, is passed back, never followed.
        """
        location = b"http://" + self.decoyAuthority() + b"/steal"
        for status in [301, 302, 303, 307, 308]:
            redirect = answerWith([(b"location", location)], status, b"")
            self.anthropic.behaviour = self.zai.behaviour = redirect
            for mode, model in [("claude", "claude-sonnet-4-5"), ("glm", "claude-x")]:
                self.useMode(mode)
                got, headers, _ = await self.send(post(message(model)))
                self.assertEqual(got, status)
                self.assertEqual(values(headers, b"location"), [location])
        self.assertEqual(len(self.anthropic.requests), 5)
        self.assertEqual(len(self.zai.requests), 5)
        self.assertDecoysUntouched()


CLIENT_CREDENTIALS = (
    (b"Authorization", b"Bearer " + CLIENT_OAUTH.encode()),
    (b"x-api-key", CLIENT_KEY.encode()),
    (b"Cookie", CLIENT_COOKIE.encode()),
    (b"x-ccrouter-token", LOCAL_TOKEN.encode()),
)


class CredentialTests(GuardedProxyCase):
    extraConfig = f"server: {{token: {LOCAL_TOKEN}}}\n"

    def received(self, mock: MockUpstream) -> list[tuple[bytes, bytes]]:
        """
        The header fields of the one request C{mock} received, from its raw
        bytes; its canaries are checked on those bytes too.
        """
        [(_, headers, _)] = rawRequests(mock.allRaw)
        return headers

    def assertOnlyCanaries(self, mock: MockUpstream, expected: Iterable[str]) -> None:
        raw = mock.allRaw
        expected = set(expected)
        for canary in (*CLIENT_CANARIES, ZAI_KEY, KIMI_KEY):
            self.assertEqual(raw.count(canary.encode()), canary in expected, canary)

    def assertAnthropicGotTheClients(self) -> None:
        headers = self.received(self.anthropic)
        self.assertEqual(
            values(headers, b"authorization"), [b"Bearer " + CLIENT_OAUTH.encode()]
        )
        self.assertEqual(values(headers, b"x-api-key"), [CLIENT_KEY.encode()])
        self.assertEqual(values(headers, b"cookie"), [CLIENT_COOKIE.encode()])
        self.assertOnlyCanaries(self.anthropic, CLIENT_CANARIES[:3])

    def assertProviderGotItsOwn(
        self, mock: MockUpstream, name: bytes, value: str, canary: str
    ) -> None:
        headers = self.received(mock)
        for header in [b"authorization", b"x-api-key", b"cookie"]:
            expected = [value.encode()] if header == name else []
            self.assertEqual(values(headers, header), expected, header)
        self.assertOnlyCanaries(mock, [canary])

    async def sendWithCredentials(self, model: str) -> int:
        status, _, _ = await self.send(post(message(model), *CLIENT_CREDENTIALS))
        return status

    async def test_anthropicRoute(self) -> None:
        """
        S8: the Anthropic route gets exactly the client's credentials and
        cookie, and neither ccrouter's token nor a provider key.
        """
        self.assertEqual(await self.sendWithCredentials("claude-sonnet-4-5"), 200)
        self.assertAnthropicGotTheClients()
        self.assertEqual((self.zai.requests, self.kimi.requests), ([], []))

    async def test_providerRoute(self) -> None:
        """
        S8: a provider gets only its own key, once, in its header form.
        """
        self.useMode("glm")
        self.assertEqual(await self.sendWithCredentials("claude-haiku-4-5"), 200)
        self.assertProviderGotItsOwn(self.zai, b"x-api-key", ZAI_KEY, ZAI_KEY)
        self.useMode("moonshot")
        self.assertEqual(await self.sendWithCredentials("claude-haiku-4-5"), 200)
        self.assertProviderGotItsOwn(
            self.kimi, b"authorization", "Bearer " + KIMI_KEY, KIMI_KEY
        )
        self.assertEqual(self.anthropic.requests, [])

    async def test_failoverAnthropicToProvider(self) -> None:
        """
        S8: failing over from Anthropic to a provider does not carry the
        client's credentials along.
        """
        self.useMode("anthropic-first")
        self.anthropic.behaviour = respondJSON(OVERLOADED, status=529)
        self.assertEqual(await self.sendWithCredentials("claude-haiku-4-5"), 200)
        self.assertAnthropicGotTheClients()
        self.assertProviderGotItsOwn(self.zai, b"x-api-key", ZAI_KEY, ZAI_KEY)

    async def test_failoverProviderToProvider(self) -> None:
        """
        S8: failing over from one provider to another does not carry the
        first one's key along.
        """
        self.useMode("providers")
        self.zai.behaviour = respondJSON(OVERLOADED, status=529)
        self.assertEqual(await self.sendWithCredentials("claude-haiku-4-5"), 200)
        self.assertProviderGotItsOwn(self.zai, b"x-api-key", ZAI_KEY, ZAI_KEY)
        self.assertProviderGotItsOwn(
            self.kimi, b"authorization", "Bearer " + KIMI_KEY, KIMI_KEY
        )
        self.assertEqual(self.anthropic.requests, [])


class TokenTests(GuardedProxyCase):
    extraConfig = f"server: {{token: {LOCAL_TOKEN}}}\n"

    async def test_tokenRequired(self) -> None:
        """
        S7: with a token configured, a request without it, with a wrong one
        (another run's), a prefix of it, or two, gets 401 and reaches no
        upstream; the right one passes and is not forwarded.
        """
        for tokens in [
            [],
            [b"local-RAW-TOKEN-CANARY-other-run"],
            [LOCAL_TOKEN[:-1].encode()],
            [LOCAL_TOKEN.encode()] * 2,
        ]:
            _, error = await self.refused(
                post(message(), *((b"x-ccrouter-token", token) for token in tokens)),
                401,
                "authentication_error",
            )
            self.assertNotIn(LOCAL_TOKEN, json.dumps(error))
        status, _, _ = await self.send(
            post(message(), (b"X-Ccrouter-Token", LOCAL_TOKEN.encode()))
        )
        self.assertEqual(status, 200)
        self.assertNotIn(LOCAL_TOKEN.encode(), self.anthropic.allRaw)


class OutboundFramingTests(GuardedProxyCase):
    async def test_outboundHeaders(self) -> None:
        """
        H5: whatever framing and hop-by-hop headers the client sends, each
        upstream sees exactly one Content-Length equal to the body, no
        Transfer-Encoding, its own authority as Host, no hop-by-hop header
        or header named in Connection, and C{Accept-Encoding: identity}.
        """
        hopByHop = b"".join(
            name + b": " + value + b"\r\n"
            for name, value in [
                # Twisted closes only on a Connection value of exactly "close".
                (b"Connection", b"close"),
                (b"Connection", b"keep-alive, X-Foo"),
                (b"X-Foo", b"must not pass"),
                (b"Keep-Alive", b"timeout=5"),
                (b"TE", b"trailers"),
                (b"Upgrade", b"websocket"),
                (b"Proxy-Authorization", b"Basic c2VjcmV0"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"Accept-Encoding", b"br"),
                (b"Expect", b"100-continue"),
                (b"Content-Type", b"application/json"),
            ]
        )
        toAnthropic = message("claude-sonnet-4-5")
        toZai = message("claude-haiku")
        for request in [
            # Content-Length framing, to the Anthropic route.
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
            + hopByHop
            + b"Content-Length: %d\r\n\r\n" % len(toAnthropic)
            + toAnthropic,
            # Chunked framing, to a provider.
            b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
            + hopByHop
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(
                b"%x\r\n%s\r\n" % (len(piece), piece)
                for piece in [toZai[:10], toZai[10:]]
            )
            + b"0\r\n\r\n",
        ]:
            status, _, _ = await self.send(request)
            self.assertEqual(status, 200)
            self.useMode("glm")

        for mock, body in [
            (self.anthropic, toAnthropic),
            (self.zai, message("glm-4.6")),
        ]:
            [(requestLine, headers, received)] = rawRequests(mock.allRaw)
            self.assertTrue(requestLine.startswith(b"POST /"), requestLine)
            self.assertEqual(received, body)
            self.assertEqual(values(headers, b"content-length"), [b"%d" % len(body)])
            self.assertEqual(values(headers, b"transfer-encoding"), [])
            self.assertEqual(
                values(headers, b"host"), [b"127.0.0.1:%d" % mock.portNumber]
            )
            self.assertEqual(values(headers, b"accept-encoding"), [b"identity"])
            names = {name for name, _ in headers}
            for name in [
                b"connection",
                b"x-foo",
                b"keep-alive",
                b"te",
                b"upgrade",
                b"proxy-authorization",
                b"proxy-connection",
                b"expect",
            ]:
                self.assertNotIn(name, names)


def deepArrays(depth: int) -> bytes:
    return b'{"model":"claude-haiku","x":' + b"[" * depth + b"]" * depth + b"}"


class JSONAbuseTests(GuardedProxyCase):
    """
    Bodies the router cannot read (or reads oddly) on the routed paths.
    The design: a body that is not a UTF-8 JSON object naming a string
    C{model} is not routed; it goes to the default upstream (Anthropic)
    byte for byte, which answers with its own 400.  ccrouter itself never
    fails on one.
    """

    mode = "glm"

    async def test_unreadableBodiesPassThrough(self) -> None:
        """
        H13, H14: invalid JSON, an empty body, an array, a missing or
        non-string model, nesting 100 000 deep, a 5 000-digit integer and
        non-UTF-8 bytes reach the default upstream unchanged, whose answer
        the client gets; no traceback is logged.
        """
        self.anthropic.behaviour = respondJSON(INVALID, status=400)
        bodies = [
            b"{",
            b"",
            b"[]",
            b'[{"model":"claude-haiku"}]',
            b'{"max_tokens":1}',
            b'{"model":5}',
            b'{"model":["claude-haiku"]}',
            b'{"model":null}',
            deepArrays(100_000),
            b'{"model":"claude-haiku","n":' + b"7" * 5000 + b"}",
            b'{"model":"claude-haiku\xff"}',
            b'\xef\xbb\xbf{"model":"claude-haiku"}',
        ]
        for body in bodies:
            status, _, answer = await self.send(post(body))
            self.assertEqual((status, json.loads(answer)), (400, INVALID), body[:40])
            self.assertEqual(self.anthropic.requests[-1].body, body)
        self.assertEqual(len(self.anthropic.requests), len(bodies))
        self.assertEqual(self.zai.requests, [])
        self.assertNotIn("Traceback", self.logText())

    async def test_oddModelsAreRoutedWithoutFailing(self) -> None:
        """
        H13, H14, S15: an empty model, one 10 MB long, with NUL, with a lone
        surrogate, NaN elsewhere, or two model keys (the last counts, as for
        JSON parsers): each is routed by its model like any other and
        answered by that upstream; no log line holds more than 256
        characters of the model.
        """
        long = "claude-" + "x" * 10_000_000
        cases = [
            (b'{"model":""}', self.anthropic),
            (json.dumps({"model": long}).encode(), self.zai),
            (b'{"model":"claude-\\u0000\\r\\n\\u001b[31m"}', self.zai),
            (b'{"model":"claude-\\ud800"}', self.zai),
            (b'{"model":"claude-haiku","temperature":NaN}', self.zai),
            (b'{"model":"gpt-4o","model":"claude-haiku"}', self.zai),
            (b'{"model":"claude-haiku","model":"gpt-4o"}', self.anthropic),
        ]
        for body, upstream in cases:
            before = len(upstream.requests)
            status, _, _ = await self.send(post(body))
            self.assertEqual(status, 200, body[:40])
            self.assertEqual(len(upstream.requests), before + 1, body[:40])
        self.assertEqual(
            [json.loads(request.body)["model"] for request in self.zai.requests],
            ["glm-4.6"] * 5,
        )
        self.assertNotIn("x" * 257, self.logText())
        self.assertNotIn("Traceback", self.logText())
