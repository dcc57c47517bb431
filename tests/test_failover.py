"""
Tests for failover in L{ccrouter.proxy} and for C{/health}, in memory: a
L{StubTreq} client over the resource tree, one controlled upstream per
provider behind L{RequestTraversalAgent}s, and a L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from twisted.web.server import Request

from ccrouter.breaker import Outcome, State, Verdict
from ccrouter.config import Upstream, parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from tests.sseclient import EventReader
from tests.test_proxy import ControlledUpstream, FailingAgent, message

ZAI_KEY = "zai-FAILOVER-CANARY-77aa"
CLIENT_KEY = "sk-ant-api03-FAILOVER-CLIENT-CANARY"
WALL = 1795262400.0
CONFIG = """
default: {url: "https://api.anthropic.com"}
upstreams:
  zai:
    url: "https://api.z.ai/api/anthropic"
    auth: {header: x-api-key, value: "${Z_AI_API_KEY}"}
default_mode: auto
breaker: {failures: 3, timeouts: 2, cooldowns: [30m, 60m]}
modes:
  glm:
    - match: "claude-*"
      model: "glm-4.6"
      upstream: zai
  claude: []
  auto: {failover: [glm, claude]}
"""
OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'


class FailoverHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        config = parseConfig(CONFIG, "c.yaml", {"Z_AI_API_KEY": ZAI_KEY})
        self.live = LiveState(
            config, now=self.clock.seconds, wallNow=lambda: WALL + self.clock.seconds()
        )
        self.zai = ControlledUpstream()
        self.anthropic = ControlledUpstream()
        self.traversals = [
            RequestTraversalAgent(self.zai),
            RequestTraversalAgent(self.anthropic),
        ]
        self.agents: dict[str, IAgent] = {
            "zai": self.traversals[0],
            "default": self.traversals[1],
        }
        self.client = StubTreq(resourceTree(self.live, self.agentFor, self.clock))

    def agentFor(self, upstream: Upstream) -> IAgent:
        return self.agents[upstream.name]

    def flush(self) -> None:
        for _ in range(3):
            for agent in self.traversals:
                agent.flush()
            self.client.flush()

    def post(self, body: bytes | None = None) -> Deferred[Any]:
        d: Deferred[Any] = self.client.request(
            "POST",
            "http://127.0.0.1:8080/v1/messages?beta=true",
            headers={
                b"x-api-key": [CLIENT_KEY.encode()],
                b"content-type": [b"application/json"],
            },
            data=message("claude-sonnet-4-5", stream=False) if body is None else body,
            unbuffered=True,
        )
        self.flush()
        return d

    def answer(
        self,
        request: Request,
        status: int,
        body: bytes = b"{}",
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        request.write(body)
        request.finish()
        self.flush()

    def result(self, d: Deferred[Any]) -> tuple[int, Any, bytes]:
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, response.headers, body

    def report(self, target: str) -> Any:
        breaker = self.live.breaker(target)
        assert breaker is not None
        return breaker.report(self.clock.seconds())

    def failGlm(self, times: int) -> None:
        """
        Requests whose glm attempt gets 529 and claude answers.
        """
        for _ in range(times):
            d = self.post()
            if len(self.zai.requests) > len(self.anthropic.requests):
                self.answer(self.zai.requests[-1], 529, OVERLOADED)
            self.answer(self.anthropic.requests[-1], 200)
            self.assertEqual(self.result(d)[0], 200)


class FailoverTests(FailoverHarness):
    def test_refusedFailsOverInvisibly(self) -> None:
        """
        S8: the preferred target refuses the connection: the request goes at
        once to the next target, with that target's model name and
        credentials, and the client sees only its answer.
        """
        self.agents["zai"] = FailingAgent(error.ConnectionRefusedError())
        d = self.post()
        [request] = self.anthropic.requests
        self.assertEqual(
            json.loads(self.anthropic.bodies[0])["model"], "claude-sonnet-4-5"
        )
        self.assertEqual(
            request.requestHeaders.getRawHeaders(b"x-api-key"), [CLIENT_KEY.encode()]
        )
        self.answer(request, 200, b'{"ok": 1}')
        status, headers, body = self.result(d)
        self.assertEqual((status, body), (200, b'{"ok": 1}'))
        self.assertIsNone(headers.getRawHeaders(b"x-should-retry"))
        self.assertEqual(self.live.failovers, 1)
        glm = self.report("glm")
        self.assertEqual(glm.consecutiveFailures, 1)
        assert glm.lastFailure is not None
        self.assertEqual(
            glm.lastFailure.reason,
            "cannot connect to upstream api.z.ai:443: connection refused",
        )
        self.assertEqual(self.report("claude").requests, 1)

    def test_statusFailsOver(self) -> None:
        """
        S8: the provider target gets its own key in place of the client's.
        """
        d = self.post()
        [zaiRequest] = self.zai.requests
        self.assertEqual(json.loads(self.zai.bodies[0])["model"], "glm-4.6")
        self.assertEqual(
            zaiRequest.requestHeaders.getRawHeaders(b"x-api-key"), [ZAI_KEY.encode()]
        )
        self.assertEqual(self.anthropic.requests, [])
        self.answer(zaiRequest, 529, OVERLOADED)
        self.answer(self.anthropic.requests[0], 200, b"{}")
        self.assertEqual(self.result(d)[0], 200)
        self.assertEqual(self.report("glm").consecutiveFailures, 1)

    def test_requestFaultsDoNotFailOver(self) -> None:
        """
        A 400 is the request's own fault: relayed as it is, not retried
        elsewhere, not counted.
        """
        d = self.post()
        body = b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 tokens > 0 maximum"}}'
        self.answer(self.zai.requests[0], 400, body)
        self.assertEqual(self.result(d)[:3:2], (400, body))
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.report("glm").consecutiveFailures, 0)

    def test_everyTargetFailed(self) -> None:
        """
        When the last target fails too, the client gets its status and its
        Anthropic-shaped body, and is told not to retry.
        """
        d = self.post()
        self.answer(self.zai.requests[0], 529, OVERLOADED)
        limited = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
        self.answer(self.anthropic.requests[0], 429, limited, {b"retry-after": b"7"})
        status, headers, body = self.result(d)
        self.assertEqual((status, body), (429, limited))
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"7"])

    def test_everyTargetFailedWithoutAnthropicBody(self) -> None:
        d = self.post()
        self.answer(self.zai.requests[0], 529, OVERLOADED)
        self.answer(self.anthropic.requests[0], 502, b"<html>bad gateway</html>")
        status, headers, body = self.result(d)
        self.assertEqual(status, 502)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(
            json.loads(body),
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "every target failed: glm: HTTP 529 (overloaded);"
                    " claude: HTTP 502 (server error)",
                },
            },
        )

    def test_everyTargetUnreachable(self) -> None:
        self.agents["zai"] = FailingAgent(error.ConnectionRefusedError())
        self.agents["default"] = FailingAgent(error.DNSLookupError("nope"))
        status, headers, body = self.result(self.post())
        self.assertEqual(status, 502)
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        message_ = json.loads(body)["error"]["message"]
        self.assertEqual(
            message_,
            "every target failed: glm: cannot connect to upstream api.z.ai:443:"
            " connection refused; claude: cannot resolve upstream host"
            " api.anthropic.com",
        )
        self.assertNotIn(ZAI_KEY, body.decode())

    def test_clientLeavesWhileTheLastErrorIsRead(self) -> None:
        """
        A client that leaves while the last target's error body is still
        arriving closes that upstream connection too.
        """
        d = self.post()
        self.answer(self.zai.requests[0], 529, OVERLOADED)
        last = self.anthropic.requests[0]
        last.setResponseCode(503)
        last.write(b'{"type":"error",')
        self.flush()
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d)
        self.flush()
        self.assertEqual(len(self.anthropic.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stalledErrorBodyGivesUp(self) -> None:
        d = self.post()
        self.answer(self.zai.requests[0], 529, OVERLOADED)
        last = self.anthropic.requests[0]
        last.setResponseCode(503)
        last.write(b'{"type":"error",')
        self.flush()
        self.clock.advance(30)
        self.flush()
        status, _, body = self.result(d)
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["error"]["type"], "api_error")
        self.assertEqual(len(self.anthropic.lost), 1)

    def test_headersTimeoutFailsOver(self) -> None:
        """
        F2: a target that sends no response headers in time is failed over
        and the timeout counts against it as a timeout.
        """
        d = self.post(message("claude-sonnet-4-5", stream=True))
        self.clock.advance(60)
        self.flush()
        self.assertEqual(len(self.zai.lost), 1)
        self.assertEqual(self.report("glm").consecutiveTimeouts, 1)
        self.answer(self.anthropic.requests[0], 200)
        self.assertEqual(self.result(d)[0], 200)

    def test_clientThatLeftIsNeutral(self) -> None:
        d = self.post()
        d.cancel()
        self.failureResultOf(d)
        self.flush()
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.report("glm").consecutiveFailures, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_singleTargetModeRelaysAsItIs(self) -> None:
        """
        Outside a failover mode a failure is relayed untouched, and Claude
        Code's own retries are left alone.
        """
        self.live.applyModeFile(b"glm")
        d = self.post()
        self.answer(self.zai.requests[0], 529, OVERLOADED)
        status, headers, body = self.result(d)
        self.assertEqual((status, body), (529, OVERLOADED))
        self.assertIsNone(headers.getRawHeaders(b"x-should-retry"))
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.report("glm").consecutiveFailures, 1)

    def test_streamBrokenAfterFirstByteIsFinal(self) -> None:
        """
        F6: once the stream has started, a break is not failed over (the client
        has bytes) but counts against the target, as a failure and not as a
        timeout.
        """
        d = self.post(message("claude-sonnet-4-5", stream=True))
        zaiRequest = self.zai.requests[0]
        zaiRequest.setResponseCode(200)
        zaiRequest.setHeader(b"content-type", b"text/event-stream")
        zaiRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        reader = EventReader()
        self.successResultOf(d).deliverBody(reader)
        zaiRequest.channel.transport.abortConnection()
        self.flush()
        self.successResultOf(reader.done)
        self.assertIn(b"event: error", reader.events[-1])
        self.assertEqual(self.anthropic.requests, [])
        report = self.report("glm")
        self.assertEqual(
            (report.consecutiveTimeouts, report.consecutiveFailures), (0, 1)
        )

    def test_completeStreamIsASuccess(self) -> None:
        self.failGlm(2)
        d = self.post(message("claude-sonnet-4-5", stream=True))
        zaiRequest = self.zai.requests[-1]
        zaiRequest.setResponseCode(200)
        zaiRequest.setHeader(b"content-type", b"text/event-stream")
        zaiRequest.write(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        zaiRequest.finish()
        self.flush()
        self.successResultOf(d)
        self.assertEqual(self.report("glm").consecutiveFailures, 0)


class CountTokensTests(FailoverHarness):
    def count(self) -> Deferred[Any]:
        d: Deferred[Any] = self.client.request(
            "POST",
            "http://127.0.0.1:8080/v1/messages/count_tokens?beta=true",
            headers={b"content-type": [b"application/json"]},
            data=json.dumps(
                {
                    "model": "claude-sonnet-4-5",
                    "messages": [{"role": "user", "content": "word " * 80}],
                }
            ).encode(),
        )
        self.flush()
        return d

    def test_providerWithoutCountTokens(self) -> None:
        """
        A third party that answers count_tokens with 404 gets no more
        token-count requests: ccrouter estimates them, and says so
        (pitfall P14).
        """
        d = self.count()
        self.answer(self.zai.requests[0], 404, b'{"error": "not found"}')
        status, headers, body = self.result(d)
        self.assertEqual(status, 200)
        self.assertEqual(
            headers.getRawHeaders(b"x-ccrouter-token-count"), [b"estimate"]
        )
        self.assertEqual(json.loads(body), {"input_tokens": 104})
        d = self.count()
        self.assertEqual(len(self.zai.requests), 1)
        self.assertEqual(self.result(d)[0], 200)
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.report("glm").consecutiveFailures, 0)


class BreakerRoutingTests(FailoverHarness):
    def test_openTargetSkipped(self) -> None:
        self.failGlm(3)
        self.assertEqual(self.report("glm").state, State.OPEN)
        zaiSeen = len(self.zai.requests)
        self.failGlm(5)
        self.assertEqual(len(self.zai.requests), zaiSeen)

    def test_halfOpenProbe(self) -> None:
        """
        After the cooldown, exactly one request probes the preferred
        target; others go on to the fallback meanwhile; the probe's success
        brings traffic back.
        """
        self.failGlm(3)
        self.clock.advance(30 * 60)
        probe = self.post()
        zaiSeen = len(self.zai.requests)
        self.assertTrue(self.report("glm").probing)
        meanwhile = self.post()
        self.assertEqual(len(self.zai.requests), zaiSeen)
        self.answer(self.anthropic.requests[-1], 200)
        self.assertEqual(self.result(meanwhile)[0], 200)
        self.answer(self.zai.requests[-1], 200)
        self.assertEqual(self.result(probe)[0], 200)
        self.assertEqual(self.report("glm").state, State.CLOSED)
        self.post()
        self.assertEqual(len(self.zai.requests), zaiSeen + 1)

    def test_failedProbeEscalates(self) -> None:
        self.failGlm(3)
        self.clock.advance(30 * 60)
        self.failGlm(1)
        report = self.report("glm")
        self.assertEqual(report.state, State.OPEN)
        self.assertEqual(report.cooldownRemaining, 60 * 60)

    def test_allOpenTriesTheSoonestFirst(self) -> None:
        for target, seconds in (("glm", 600.0), ("claude", 60.0)):
            breaker = self.live.breaker(target)
            assert breaker is not None
            breaker.record(Outcome(Verdict.FAILURE, "429", seconds), 0.0, None)
        d = self.post()
        self.assertEqual((len(self.zai.requests), len(self.anthropic.requests)), (0, 1))
        self.answer(self.anthropic.requests[0], 200)
        self.assertEqual(self.result(d)[0], 200)
        self.assertEqual(self.report("claude").state, State.CLOSED)

    def test_openTargetNotTriedAfterTheOthersFail(self) -> None:
        """
        A target out of rotation stays out while another was available at
        the start, even when that one fails: its cooldown is respected.
        """
        d = self.post()
        self.answer(self.zai.requests[0], 429, b"{}", {b"retry-after": b"300"})
        self.answer(self.anthropic.requests[0], 200)
        self.assertEqual(self.result(d)[0], 200)
        d = self.post()
        self.answer(self.anthropic.requests[1], 529, OVERLOADED)
        status, headers, body = self.result(d)
        self.assertEqual((status, body), (529, OVERLOADED))
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        self.assertEqual(len(self.zai.requests), 1)
        d = self.post()
        self.answer(self.anthropic.requests[2], 502, b"gateway")
        self.assertEqual(
            json.loads(self.result(d)[2])["error"]["message"],
            "every target failed: glm: out of rotation for another 5.0 min;"
            " claude: HTTP 502 (server error)",
        )

    def test_noSecondRequestBesideTheProbe(self) -> None:
        """
        While the probe is out, other requests go to the other targets, and
        if those fail they are not sent to the target being probed.
        """
        self.failGlm(3)
        self.clock.advance(30 * 60)
        probe = self.post()
        other = self.post()
        self.assertEqual(len(self.zai.requests), 4)
        self.answer(self.anthropic.requests[-1], 503)
        self.assertEqual(self.result(other)[0], 503)
        self.assertEqual(len(self.zai.requests), 4)
        self.answer(self.zai.requests[-1], 200)
        self.assertEqual(self.result(probe)[0], 200)
        self.assertEqual(self.report("glm").state, State.CLOSED)

    def test_rateLimitResetOpensAtOnce(self) -> None:
        d = self.post()
        self.answer(self.zai.requests[0], 429, b"{}", {b"retry-after": b"120"})
        self.answer(self.anthropic.requests[0], 200)
        self.assertEqual(self.result(d)[0], 200)
        report = self.report("glm")
        self.assertEqual(report.state, State.OPEN)
        self.assertEqual(report.cooldownRemaining, 120)
        self.assertEqual(report.cooldownSource.value, "rate-limit-reset")


class HealthTests(FailoverHarness):
    def health(self, host: bytes = b"127.0.0.1:8080") -> tuple[int, Any, bytes]:
        d = self.client.request(
            "GET", "http://127.0.0.1:8080/health", headers={b"host": [host]}
        )
        self.flush()
        return self.result(d)

    def test_document(self) -> None:
        self.failGlm(3)
        self.live.applyModeFile(b"nonsense")
        status, headers, body = self.health()
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        document = json.loads(body)
        self.assertEqual(document["status"], "degraded")
        self.assertEqual(document["mode"], "auto")
        self.assertEqual(document["mode_source"], "default")
        self.assertIn("nonsense", document["mode_file_problem"])
        self.assertEqual(document["modes"], ["glm", "claude", "auto"])
        self.assertEqual(
            document["auto_switch"],
            {
                "targets": ["glm", "claude"],
                "preferred": "glm",
                "current": "claude",
                "switched": True,
                "failovers": 3,
            },
        )
        glm = document["targets"]["glm"]
        self.assertEqual(glm["state"], "open")
        self.assertEqual(glm["kind"], "mode")
        self.assertEqual(glm["cooldown_remaining_seconds"], 1800)
        self.assertEqual(glm["cooldown_until"], "2026-11-21T12:30:00Z")
        self.assertEqual(glm["cooldown_source"], "schedule")
        self.assertEqual(glm["next_cooldown_seconds"], 3600)
        self.assertEqual(glm["opens"], 1)
        self.assertEqual(glm["last_failure"]["reason"], "HTTP 529 (overloaded)")
        self.assertEqual((glm["requests"], glm["failures"]), (3, 3))
        self.assertEqual(document["targets"]["claude"]["state"], "closed")
        for canary in (ZAI_KEY, CLIENT_KEY, "api.z.ai"):
            self.assertNotIn(canary, body.decode())

    def test_healthyIsOk(self) -> None:
        document = json.loads(self.health()[2])
        self.assertEqual(document["status"], "ok")
        self.assertIsNone(document["mode_file_problem"])
        self.assertFalse(document["auto_switch"]["switched"])

    def test_guarded(self) -> None:
        """
        S2: a page on another site reaching /health by DNS rebinding is refused
        like any other request.
        """
        status, _, body = self.health(b"attacker.example")
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(body)["error"]["type"], "permission_error")

    def test_onlyGetAndHead(self) -> None:
        d = self.client.request("POST", "http://127.0.0.1:8080/health", data=b"{}")
        self.flush()
        status, headers, body = self.result(d)
        self.assertEqual(status, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        self.assertEqual(json.loads(body)["error"]["type"], "invalid_request_error")
        d = self.client.request("HEAD", "http://127.0.0.1:8080/health")
        self.flush()
        self.assertEqual(self.result(d)[:3:2], (200, b""))


LOCAL_TOKEN = "local-TOKEN-CANARY-5e1a9c"


class LocalTokenTests(FailoverHarness):
    def setUp(self) -> None:
        super().setUp()
        self.live.applyConfig(
            parseConfig(
                CONFIG + f"server: {{token: {LOCAL_TOKEN}}}\n",
                "c.yaml",
                {"Z_AI_API_KEY": ZAI_KEY},
            )
        )

    def send(self, tokens: list[bytes], path: str = "/v1/messages") -> Deferred[Any]:
        headers = {b"content-type": [b"application/json"]}
        if tokens:
            headers[b"x-ccrouter-token"] = tokens
        d: Deferred[Any] = self.client.request(
            "POST",
            "http://127.0.0.1:8080" + path,
            headers=headers,
            data=message("claude-sonnet-4-5", stream=False),
        )
        self.flush()
        return d

    def test_requestsNeedTheToken(self) -> None:
        """
        S7: with server.token set, a request without it, with a wrong one, or
        with two, is refused before anything is sent upstream; the token
        never appears in the answer.
        """
        for tokens in ([], [b"wrong-token-wrong-token"], [LOCAL_TOKEN.encode()] * 2):
            status, _, body = self.result(self.send(tokens))
            self.assertEqual(status, 401, tokens)
            self.assertEqual(json.loads(body)["error"]["type"], "authentication_error")
            self.assertNotIn(LOCAL_TOKEN, body.decode())
        self.assertEqual((self.zai.requests, self.anthropic.requests), ([], []))

    def test_tokenAcceptedAndNotForwarded(self) -> None:
        """
        S7: the right token lets the request through and is not forwarded.
        """
        d = self.send([LOCAL_TOKEN.encode()])
        [request] = self.zai.requests
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"x-ccrouter-token"))
        self.answer(request, 200)
        self.assertEqual(self.result(d)[0], 200)

    def test_healthNeedsNoToken(self) -> None:
        """
        S7: C{/health} needs no token and never shows it.
        """
        d = self.client.request("GET", "http://127.0.0.1:8080/health")
        self.flush()
        status, _, body = self.result(d)
        self.assertEqual(status, 200)
        self.assertNotIn(LOCAL_TOKEN, body.decode())
