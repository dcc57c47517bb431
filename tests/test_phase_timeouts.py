"""
Tests that each upstream timeout phase (connect, response headers, idle
between body bytes) ends the request the right way (504 before the
headers, an C{error} event after) and counts for the target's breaker as a
timeout, not as a plain failure; in memory with a L{Clock}, as in
L{tests.test_failover}.
"""

from __future__ import annotations

import json

from twisted.internet import error

from tests.sseclient import EventReader
from tests.test_failover import FailoverHarness
from tests.test_proxy import FailingAgent, message


class PhaseTimeoutTests(FailoverHarness):
    def setUp(self) -> None:
        super().setUp()
        # Only the glm target: nothing to fail over to.
        self.live.applyModeFile(b"glm")

    def assertTimeouts(self, count: int) -> None:
        report = self.report("glm")
        self.assertEqual(
            (report.consecutiveTimeouts, report.consecutiveFailures), (count, count)
        )

    def test_connectTimeout(self) -> None:
        """
        F3: a connect timeout answers 504 C{timeout_error} and counts as a
        timeout: two in a row open the breaker (C{timeouts: 2}).
        """
        self.agents["zai"] = FailingAgent(error.TimeoutError())
        status, _, body = self.result(self.post())
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(body)["error"]["type"], "timeout_error")
        self.assertTimeouts(1)
        self.assertEqual(self.result(self.post())[0], 504)
        self.assertEqual(self.report("glm").state.value, "open")

    def test_headersTimeout(self) -> None:
        """
        F2: no response headers within C{stream_headers} (60 s) answers 504
        C{timeout_error}, closes the upstream request and counts as a
        timeout.
        """
        d = self.post(message("claude-sonnet-4-5", stream=True))
        self.clock.advance(59)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(1)
        self.flush()
        status, _, body = self.result(d)
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(body)["error"]["type"], "timeout_error")
        self.assertEqual(len(self.zai.lost), 1)
        self.assertTimeouts(1)

    def test_idleTimeoutAfterHeaders(self) -> None:
        """
        F5: an upstream silent for the idle timeout (300 s) after its 200
        ends the client's stream with a C{timeout_error} event, is closed,
        is not failed over, and counts as a timeout.
        """
        self.live.applyModeFile(b"auto")
        d = self.post(message("claude-sonnet-4-5", stream=True))
        zaiRequest = self.zai.requests[0]
        zaiRequest.setResponseCode(200)
        zaiRequest.setHeader(b"content-type", b"text/event-stream")
        zaiRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        reader = EventReader()
        self.successResultOf(d).deliverBody(reader)
        self.clock.advance(299)
        self.flush()
        self.assertNoResult(reader.done)
        self.clock.advance(1)
        self.flush()
        self.successResultOf(reader.done)
        last = reader.events[-1]
        self.assertTrue(last.startswith(b"event: error\n"), last)
        self.assertEqual(
            json.loads(last.split(b"data: ", 1)[1])["error"]["type"], "timeout_error"
        )
        self.assertEqual(len(self.zai.lost), 1)
        self.assertEqual(self.anthropic.requests, [])
        self.assertTimeouts(1)
