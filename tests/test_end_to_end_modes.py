"""
End-to-end tests of modes, hot reload and failover: C{twistd -n ccrouter}
runs as a child process in front of mock upstreams, while the tests switch
the mode file, rewrite the config, send C{SIGHUP} and make upstreams fail.

Nothing here sleeps to synchronise: every wait is a bounded poll of an
observable condition (C{/health}, the process log, what a mock received)
through L{waitFor}, which fails the test with a clear message at its
deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Callable
from inspect import isawaitable
from pathlib import Path
from typing import Any

import anthropic
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import FailTest

from tests.mockupstream import (
    MockUpstream,
    anthropicMessage,
    anthropicStream,
    respondEvents,
    respondJSON,
)
from tests.proxyprocess import ProxyProcess
from tests.test_end_to_end import EndToEndCase, freePort, messageBody

#: How often L{waitFor} looks again.
POLL = 0.05

CLIENT_CANARY = "sk-ant-api03-MODES-CLIENT-CANARY-93f1"
UPSTREAM_CANARY = "canary-MODES-UPSTREAM-KEY-5b07"


async def waitFor(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "the condition",
    detail: Callable[[], object] | None = None,
) -> Any:
    """
    Call C{predicate} (which may return an awaitable) every L{POLL} seconds
    until it gives something true, and return that; fail the test once
    C{timeout} seconds have passed without it.

    @param detail: What to show in the failure message (the last value
        seen, typically).
    """
    deadline = reactor.seconds() + timeout
    while True:
        result = predicate()
        if isawaitable(result):
            result = await result
        if result:
            return result
        if reactor.seconds() >= deadline:
            shown = "" if detail is None else f"; last seen: {detail()!r}"
            raise FailTest(f"gave up after {timeout} s waiting for {what}{shown}")
        await deferLater(reactor, POLL, lambda: None)


def anthropicError(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def replaceFile(path: Path, text: str) -> None:
    """
    Save C{text} the way editors and C{ccrouter mode} do: a temporary file
    beside it, then a rename over it.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class ModesCase(EndToEndCase):
    """
    Helpers for tests that keep the config file (to rewrite it, to find
    the mode and breaker state files beside it, or to restart on it).
    """

    def configFile(self, text: str) -> Path:
        return self.writeConfig(text).resolve()

    async def start(
        self, configPath: Path, environ: dict[str, str] | None = None
    ) -> ProxyProcess:
        process = ProxyProcess(
            ["--config", str(configPath), "--listen", "tcp:0:interface=127.0.0.1"],
            environ,
        )
        self.addCleanup(process.stop)
        await process.start()
        return process

    async def healthBytes(self, proxy: ProxyProcess) -> bytes:
        response = await self.http.get(f"{proxy.url}/health")
        body: bytes = await response.content()
        self.assertEqual(response.code, 200, body)
        return body

    async def health(self, proxy: ProxyProcess) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(await self.healthBytes(proxy))
        return document

    async def waitForHealth(
        self,
        proxy: ProxyProcess,
        check: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """
        Poll C{/health} until C{check} accepts it; return that document.
        """
        seen: list[dict[str, Any]] = []

        async def matches() -> dict[str, Any] | None:
            self.assertRunning(proxy)
            document = await self.health(proxy)
            seen[:] = [document]
            return document if check(document) else None

        document: dict[str, Any] = await waitFor(
            matches, timeout, what, lambda: seen[0] if seen else None
        )
        return document

    def assertRunning(self, proxy: ProxyProcess) -> None:
        """
        Fail at once, rather than at a deadline, when the proxy has exited.
        """
        if proxy.exited.called:
            raise FailTest(
                f"the proxy exited (code {proxy.exitCode}, signal"
                f" {proxy.exitSignal}):\n{proxy.output.decode(errors='replace')}"
            )

    async def waitForLog(
        self, proxy: ProxyProcess, text: bytes, count: int = 1, timeout: float = 5.0
    ) -> None:
        def logged() -> bool:
            if proxy.output.count(text) >= count:
                return True
            self.assertRunning(proxy)
            return False

        await waitFor(
            logged,
            timeout,
            f"{count} x {text!r} in the proxy's log",
            lambda: proxy.output.decode(errors="replace")[-2000:],
        )

    async def askFor(
        self, proxy: ProxyProcess, model: str = "claude-sonnet-4-5"
    ) -> tuple[int, Any, Any]:
        """
        A non-streaming request; its status, headers and parsed body.
        """
        response = await self.post(proxy, messageBody(model, stream=False))
        body = await response.content()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body
        return response.code, response.headers, parsed

    async def text(self, proxy: ProxyProcess, model: str = "claude-sonnet-4-5") -> str:
        status, _, body = await self.askFor(proxy, model)
        self.assertEqual(status, 200, body)
        text: str = body["content"][0]["text"]
        return text


def failoverConfig(
    fallback: MockUpstream,
    primaryURL: str,
    breaker: str,
    auth: str = "",
) -> str:
    """
    A config whose default mode C{auto} fails over from the upstream
    C{primary} (which takes every model) to the mode C{claude} (everything
    to C{fallback}, the default upstream).
    """
    return f"""
default: {{url: "{fallback.url}"}}
upstreams:
  primary: {{url: "{primaryURL}"{auth}}}
breaker: {breaker}
modes:
  auto:
    failover: [primary, claude]
  claude: []
"""


class ModeSwitchTests(ModesCase):
    async def test_modeFileSwitchesModes(self) -> None:
        """
        C7: the mode file picks the mode for new requests: absent, the default
        mode; naming a mode, that mode (within two seconds of the save); naming
        no mode, the previous mode stays and C{/health} says why; removed again,
        back to the default mode.
        """
        mockA = self.upstream(respondJSON(anthropicMessage("from A")))
        mockB = self.upstream(respondJSON(anthropicMessage("from B")))
        config = self.configFile(
            f"""
default: {{url: "{mockB.url}"}}
upstreams:
  other: {{url: "{mockA.url}"}}
modes:
  a:
    - match: "claude-sonnet-*"
      model: "gemini-pro"
      upstream: other
  b: []
"""
        )
        modeFile = config.parent / "mode"
        proxy = await self.start(config)

        health = await self.health(proxy)
        self.assertEqual(
            (health["mode"], health["mode_source"], health["default_mode"]),
            ("a", "default", "a"),
        )
        self.assertEqual(health["mode_file"], str(modeFile))
        self.assertEqual(health["modes"], ["a", "b"])
        self.assertEqual(health["status"], "ok")
        self.assertIsNone(health["auto_switch"])
        self.assertEqual(await self.text(proxy), "from A")
        self.assertEqual(mockA.requests[-1].json()["model"], "gemini-pro")

        replaceFile(modeFile, "b\n")
        health = await self.waitForHealth(
            proxy, lambda h: h["mode"] == "b", "mode b", timeout=2.0
        )
        self.assertEqual(health["mode_source"], "file")
        self.assertIsNone(health["mode_file_problem"])
        self.assertEqual(await self.text(proxy), "from B")
        self.assertEqual(mockB.requests[-1].json()["model"], "claude-sonnet-4-5")
        self.assertEqual(len(mockA.requests), 1)

        replaceFile(modeFile, "nonsense-mode\n")
        health = await self.waitForHealth(
            proxy, lambda h: h["mode_file_problem"] is not None, "a mode file problem"
        )
        self.assertIn("nonsense-mode", health["mode_file_problem"])
        self.assertEqual((health["mode"], health["mode_source"]), ("b", "file"))
        self.assertEqual(health["status"], "degraded")
        self.assertEqual(await self.text(proxy), "from B")

        modeFile.unlink()
        health = await self.waitForHealth(
            proxy, lambda h: h["mode_source"] == "default", "the default mode"
        )
        self.assertEqual(health["mode"], "a")
        self.assertIsNone(health["mode_file_problem"])
        self.assertEqual(health["status"], "ok")
        self.assertEqual(await self.text(proxy), "from A")
        self.assertEqual((len(mockA.requests), len(mockB.requests)), (2, 2))


class ReloadTests(ModesCase):
    async def test_configHotReload(self) -> None:
        """
        C1: a broken config saved over the one in force is refused, said so in
        C{/health} (file, line and key) and in the log, once; requests go on
        under the config in force. A valid one saved next is in force for the
        next request.
        """
        mockA = self.upstream(respondJSON(anthropicMessage("from A")))
        mockB = self.upstream(respondJSON(anthropicMessage("from B")))
        config = self.configFile(f'default: {{url: "{mockA.url}"}}\n')
        proxy = await self.start(config)
        health = await self.health(proxy)
        self.assertEqual(health["config"]["path"], str(config))
        self.assertIsNone(health["config"]["last_reload"])
        self.assertEqual(await self.text(proxy), "from A")

        replaceFile(config, "routes:\n  - match: x\n    uptream: y\n")
        health = await self.waitForHealth(
            proxy,
            lambda h: h["config"]["last_reload"] is not None,
            "the broken config to be read",
        )
        reload = health["config"]["last_reload"]
        self.assertFalse(reload["ok"])
        self.assertIn(f"{config}:3: routes[0].uptream:", reload["error"])
        self.assertIn("'upstream'", reload["error"])
        self.assertEqual(health["status"], "degraded")
        self.assertEqual(await self.text(proxy), "from A")
        self.assertEqual(mockB.requests, [])

        refused = b"config not reloaded"
        await self.waitForLog(proxy, refused)
        # Three poll intervals and more: a poller that logged the refusal
        # each time it looked would have logged it again by now.
        since = health["uptime_seconds"]
        await self.waitForHealth(
            proxy, lambda h: h["uptime_seconds"] >= since + 1.5, "1.5 s of uptime"
        )
        self.assertEqual(proxy.output.count(refused), 1)
        self.assertIn(str(config).encode() + b":3: routes[0].uptream", proxy.output)

        replaceFile(config, f'default: {{url: "{mockB.url}"}}\n')
        health = await self.waitForHealth(
            proxy,
            lambda h: h["config"]["last_reload"]["ok"],
            "the valid config to be loaded",
        )
        self.assertIsNone(health["config"]["last_reload"]["error"])
        self.assertEqual(health["status"], "ok")
        self.assertEqual(await self.text(proxy), "from B")
        self.assertEqual(len(mockA.requests), 2)
        self.assertEqual(proxy.output.count(refused), 1)

    async def test_sighupReloadsAtOnce(self) -> None:
        """
        F21: C{SIGHUP} reloads the config at once, before the poller (which
        waits for a change to hold still for a whole interval) could, and the
        process lives on. A broken config reloaded twice is reported once.
        """
        mockA = self.upstream(respondJSON(anthropicMessage("from A")))
        mockB = self.upstream(respondJSON(anthropicMessage("from B")))
        config = self.configFile(f'default: {{url: "{mockA.url}"}}\n')
        proxy = await self.start(config)
        assert proxy.pid is not None
        before = await self.health(proxy)
        self.assertEqual(await self.text(proxy), "from A")

        replaceFile(config, f'default: {{url: "{mockB.url}"}}\n')
        # Touched every 50 ms, the file never holds still for a poll
        # interval, so the poller never applies it: only the signal can.
        touches = iter(range(1, 10_000))
        toucher = LoopingCall(lambda: os.utime(config, ns=(0, 10**18 + next(touches))))
        toucher.start(0.05)
        try:
            await self.waitForHealth(
                proxy,
                lambda h: h["uptime_seconds"] >= before["uptime_seconds"] + 1.2,
                "1.2 s of uptime",
            )
            self.assertEqual(await self.text(proxy), "from A")
            os.kill(proxy.pid, signal.SIGHUP)
            await self.waitForLog(proxy, b"config reloaded")
        finally:
            toucher.stop()
        health = await self.waitForHealth(
            proxy,
            lambda h: h["config"]["last_reload"] is not None,
            "the reload SIGHUP asked for",
        )
        self.assertTrue(health["config"]["last_reload"]["ok"])
        self.assertEqual(await self.text(proxy), "from B")
        self.assertFalse(proxy.exited.called)
        self.assertGreater(health["uptime_seconds"], before["uptime_seconds"])
        self.assertEqual(health["started_at"], before["started_at"])

        # A broken config, reloaded by two SIGHUPs.  The log is one ordered
        # stream: once the third SIGHUP's line is in, whatever the second
        # reload logged is in too.
        replaceFile(config, "routes:\n  - match: x\n    uptream: y\n")
        os.kill(proxy.pid, signal.SIGHUP)
        await self.waitForLog(proxy, b"SIGHUP", count=2)
        os.kill(proxy.pid, signal.SIGHUP)
        await self.waitForLog(proxy, b"SIGHUP", count=3)
        self.assertEqual(proxy.output.count(b"config not reloaded"), 1)
        health = await self.health(proxy)
        self.assertFalse(health["config"]["last_reload"]["ok"])
        self.assertEqual(await self.text(proxy), "from B")
        self.assertFalse(proxy.exited.called)
        self.assertNotIn(b"Traceback", proxy.output)


class FailoverTests(ModesCase):
    async def test_connectionRefusedFailsOver(self) -> None:
        """
        F1: a target that refuses connections is skipped for the next one at
        once, unseen by the client (the official SDK, streaming); after three
        such failures its breaker opens and requests go straight to the
        fallback.
        """
        fallbackMock = self.upstream(
            respondEvents(anthropicStream("fallback says hi"), spacing=0.002)
        )
        config = self.configFile(
            f"""
default: {{url: "{fallbackMock.url}"}}
upstreams:
  nowhere: {{url: "http://127.0.0.1:{freePort()}"}}
default_mode: auto
breaker: {{failures: 3, cooldowns: [60s]}}
modes:
  primary:
    - match: "*"
      upstream: nowhere
  fallback: []
  auto:
    failover: [primary, fallback]
"""
        )
        proxy = await self.start(config)

        def stream() -> str:
            with anthropic.Anthropic(
                base_url=proxy.url, api_key=CLIENT_CANARY, max_retries=0
            ) as client:
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=1024,
                    messages=[{"role": "user", "content": "hi"}],
                ) as events:
                    text = "".join(events.text_stream)
                    events.get_final_message()
                return text

        self.assertEqual(await deferToThread(stream), "fallback says hi ")
        health = await self.health(proxy)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["kind"], "mode")
        self.assertEqual(primary["consecutive_failures"], 1)
        self.assertEqual(primary["state"], "closed")
        self.assertIn("connection refused", primary["last_failure"]["reason"])
        self.assertEqual(health["targets"]["fallback"]["state"], "closed")
        self.assertEqual(health["auto_switch"]["failovers"], 1)
        self.assertEqual(health["auto_switch"]["current"], "primary")

        for _ in range(2):
            self.assertEqual(await deferToThread(stream), "fallback says hi ")
        health = await self.health(proxy)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["state"], "open")
        self.assertEqual(primary["opens"], 1)
        self.assertEqual(primary["requests"], 3)
        self.assertEqual(health["auto_switch"]["failovers"], 3)
        self.assertEqual(health["auto_switch"]["current"], "fallback")
        self.assertTrue(health["auto_switch"]["switched"])
        self.assertEqual(health["status"], "degraded")

        self.assertEqual(await deferToThread(stream), "fallback says hi ")
        health = await self.health(proxy)
        self.assertEqual(health["targets"]["primary"]["requests"], 3)
        self.assertEqual(health["auto_switch"]["failovers"], 3)
        self.assertEqual(health["auto_switch"]["current"], "fallback")
        self.assertEqual(health["targets"]["fallback"]["requests"], 4)
        self.assertEqual(len(fallbackMock.requests), 4)

    async def test_rateLimitedBreakerLifecycle(self) -> None:
        """
        F10, F11: three 429s open the primary's breaker on the schedule; once
        the cooldown is over one request probes it, and its success closes the
        breaker. The client never sees the 429s.
        """
        primaryMock = self.upstream(
            respondJSON(anthropicError("rate_limit_error", "slow down"), status=429)
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        proxy = await self.start(
            self.configFile(
                failoverConfig(
                    fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [2s, 4s]}"
                )
            )
        )
        for _ in range(3):
            self.assertEqual(await self.text(proxy), "from fallback")
        self.assertEqual(len(primaryMock.requests), 3)
        health = await self.health(proxy)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["kind"], "upstream")
        self.assertEqual(primary["state"], "open")
        self.assertEqual(primary["cooldown_source"], "schedule")
        self.assertEqual(primary["next_cooldown_seconds"], 4)
        self.assertEqual(primary["opens"], 1)
        self.assertLessEqual(primary["cooldown_remaining_seconds"], 2)
        self.assertIn("429", primary["last_failure"]["reason"])

        health = await self.waitForHealth(
            proxy,
            lambda h: h["targets"]["primary"]["state"] == "half-open",
            "the primary's cooldown to end",
        )
        self.assertEqual(health["auto_switch"]["current"], "primary")
        primaryMock.behaviour = respondJSON(anthropicMessage("from primary"))
        self.assertEqual(await self.text(proxy), "from primary")
        self.assertEqual(len(primaryMock.requests), 4)
        health = await self.health(proxy)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["state"], "closed")
        self.assertEqual(primary["opens"], 1)
        self.assertEqual(primary["consecutive_failures"], 0)
        self.assertFalse(primary["probing"])
        self.assertEqual(health["status"], "ok")
        self.assertEqual(len(fallbackMock.requests), 3)

    async def test_retryAfterOpensAtOnce(self) -> None:
        """
        F10: a 429 that says when the limit resets takes the target out of
        rotation at once, for that long rather than the schedule's cooldown.
        """
        primaryMock = self.upstream(
            respondJSON(
                anthropicError("rate_limit_error", "slow down"),
                status=429,
                headers={b"retry-after": b"2"},
            )
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        proxy = await self.start(
            self.configFile(
                failoverConfig(
                    fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [60s]}"
                )
            )
        )
        self.assertEqual(await self.text(proxy), "from fallback")
        health = await self.health(proxy)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["state"], "open")
        self.assertEqual(primary["cooldown_source"], "rate-limit-reset")
        self.assertLessEqual(primary["cooldown_remaining_seconds"], 2)
        self.assertGreater(primary["cooldown_remaining_seconds"], 0)
        self.assertEqual(primary["opens"], 1)
        # The next request does not knock on the rate-limited target.
        self.assertEqual(await self.text(proxy), "from fallback")
        self.assertEqual(len(primaryMock.requests), 1)
        # And the cooldown is the upstream's, not the schedule's 60 s.
        await self.waitForHealth(
            proxy,
            lambda h: h["targets"]["primary"]["state"] == "half-open",
            "the rate limit to reset",
        )

    async def test_everyTargetFails(self) -> None:
        """
        F8, F12: when every target fails, the client gets the last target's
        status with C{x-should-retry: false}, and its error body when it has
        Anthropic's shape, or else one in that shape made by ccrouter.
        """
        primaryBody = anthropicError("overloaded_error", "primary is overloaded")
        fallbackBody = anthropicError("overloaded_error", "fallback is overloaded")
        primaryMock = self.upstream(respondJSON(primaryBody, status=529))
        fallbackMock = self.upstream(respondJSON(fallbackBody, status=529))
        proxy = await self.start(
            self.configFile(
                failoverConfig(
                    fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [60s]}"
                )
            )
        )
        status, headers, body = await self.askFor(proxy)
        self.assertEqual(status, 529)
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(body, fallbackBody)
        self.assertEqual(
            (len(primaryMock.requests), len(fallbackMock.requests)), (1, 1)
        )

        primaryMock.behaviour = respondJSON(primaryBody, status=503)

        def notAnthropic(request: Any) -> bytes:
            request.setResponseCode(529)
            request.setHeader(b"content-type", b"text/html")
            return b"<html>overloaded</html>"

        fallbackMock.behaviour = notAnthropic
        status, headers, body = await self.askFor(proxy)
        self.assertEqual(status, 529)
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], "overloaded_error")
        message = body["error"]["message"]
        self.assertTrue(message.startswith("every target failed: "), message)
        self.assertIn("primary: HTTP 503", message)
        self.assertIn("claude: HTTP 529", message)
        health = await self.health(proxy)
        self.assertEqual(health["targets"]["primary"]["consecutive_failures"], 2)
        self.assertEqual(health["targets"]["claude"]["consecutive_failures"], 2)


class RestartTests(ModesCase):
    async def test_breakerStateSurvivesRestart(self) -> None:
        """
        F22: an open breaker is saved beside the config and still open after a
        restart, so the target in cooldown gets no traffic.
        """
        primaryMock = self.upstream(
            respondJSON(anthropicError("overloaded_error", "busy"), status=529)
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        config = self.configFile(
            failoverConfig(
                fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [60s]}"
            )
        )
        stateFile = config.parent / "breakers.json"
        proxy = await self.start(config)
        for _ in range(3):
            self.assertEqual(await self.text(proxy), "from fallback")
        health = await self.health(proxy)
        self.assertEqual(health["targets"]["primary"]["state"], "open")
        await proxy.stop()
        self.assertNotIn(b"Traceback", proxy.output)

        self.assertTrue(stateFile.exists(), f"no {stateFile}")
        saved = json.loads(stateFile.read_text())
        self.assertGreater(saved["targets"]["primary"]["open_for"], 30)

        self.assertEqual(len(primaryMock.requests), 3)
        restarted = await self.start(config)
        health = await self.health(restarted)
        primary = health["targets"]["primary"]
        self.assertEqual(primary["state"], "open")
        self.assertGreater(primary["cooldown_remaining_seconds"], 30)
        self.assertEqual(primary["opens"], 1)
        self.assertEqual(primary["cooldown_source"], "schedule")
        self.assertEqual(health["auto_switch"]["current"], "claude")
        self.assertEqual(await self.text(restarted), "from fallback")
        self.assertEqual(len(primaryMock.requests), 3)
        [restoredLine] = [
            line
            for line in restarted.output.splitlines()
            if b"restored the breaker state of " in line
        ]
        self.assertIn(b"primary", restoredLine)

    async def test_breakerStateSurvivesSIGKILL(self) -> None:
        """
        F22: killed with SIGKILL (no chance to save anything on the way
        out) and started again on the same config, ccrouter is back within
        seconds with the open breaker restored: the target in cooldown gets
        no traffic.
        """
        primaryMock = self.upstream(
            respondJSON(anthropicError("overloaded_error", "busy"), status=529)
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        config = self.configFile(
            failoverConfig(
                fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [60s]}"
            )
        )
        proxy = await self.start(config)
        for _ in range(3):
            self.assertEqual(await self.text(proxy), "from fallback")
        health = await self.health(proxy)
        self.assertEqual(health["targets"]["primary"]["state"], "open")
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGKILL)
        await proxy.exited
        self.assertEqual(proxy.exitSignal, signal.SIGKILL)

        started = reactor.seconds()
        restarted = await self.start(config)
        # Generous: about a second here; the catalogue asks for 2 s.
        self.assertLess(reactor.seconds() - started, 10)
        primary = (await self.health(restarted))["targets"]["primary"]
        self.assertEqual((primary["state"], primary["opens"]), ("open", 1))
        self.assertGreater(primary["cooldown_remaining_seconds"], 30)
        self.assertEqual(await self.text(restarted), "from fallback")
        self.assertEqual(len(primaryMock.requests), 3)

    async def test_retryAmplification(self) -> None:
        """
        F13: 200 requests, ten at a time, against an always-529 primary
        with a healthy fallback: every request succeeds, fails over at most
        once, and the primary only gets the attempts that open its breaker:
        upstream attempts stay within 1.2 times the requests, plus 3.
        """
        primaryMock = self.upstream(
            respondJSON(anthropicError("overloaded_error", "busy"), status=529)
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        proxy = await self.start(
            self.configFile(
                failoverConfig(
                    fallbackMock, primaryMock.url, "{failures: 3, cooldowns: [60s]}"
                )
            )
        )
        texts: list[str] = []

        async def client() -> None:
            for _ in range(20):
                texts.append(await self.text(proxy))

        await defer.gatherResults(
            [defer.ensureDeferred(client()) for _ in range(10)], consumeErrors=True
        )
        self.assertEqual(texts, ["from fallback"] * 200)
        attempts = len(primaryMock.requests) + len(fallbackMock.requests)
        self.assertLessEqual(attempts, 1.2 * 200 + 3)
        self.assertEqual(len(fallbackMock.requests), 200)
        health = await self.health(proxy)
        self.assertEqual(health["auto_switch"]["failovers"], len(primaryMock.requests))
        self.assertEqual(health["targets"]["primary"]["state"], "open")


class InFlightTests(ModesCase):
    async def test_modeFlipsWhileStreaming(self) -> None:
        """
        C8: the mode file rewritten every 10 ms (and re-read at once by a
        C{SIGHUP} every 70 ms, so the mode really changes) for three
        seconds while 20 streams run back to back: each stream is answered
        whole, byte for byte, by the one upstream of the mode it started
        in; nothing fails; the last mode written is in force within two
        seconds once the flipping stops.
        """
        wordsA = " ".join(["from-A"] * 15)
        wordsB = " ".join(["from-B"] * 15)
        eventsA, eventsB = anthropicStream(wordsA), anthropicStream(wordsB)
        mockA = self.upstream(respondEvents(eventsA, spacing=0.02))
        mockB = self.upstream(respondEvents(eventsB, spacing=0.02))
        config = self.configFile(
            f"""
default: {{url: "{mockB.url}"}}
upstreams:
  other: {{url: "{mockA.url}"}}
modes:
  a: [{{match: "*", upstream: other}}]
  b: []
"""
        )
        modeFile = config.parent / "mode"
        proxy = await self.start(config)
        assert proxy.pid is not None
        pid = proxy.pid
        names = itertools.cycle(["a\n", "b\n"])
        flips = [0]

        def flip() -> None:
            replaceFile(modeFile, next(names))
            flips[0] += 1
            # Every seventh flip: the file then names either mode in turn.
            if flips[0] % 7 == 0:
                os.kill(pid, signal.SIGHUP)

        results: list[tuple[int, bytes]] = []
        deadline = reactor.seconds() + 3

        async def client() -> None:
            while reactor.seconds() < deadline:
                response = await self.post(proxy, messageBody("claude-sonnet-4-5"))
                results.append((response.code, await response.content()))

        flipper = LoopingCall(flip)
        flipper.start(0.01)
        try:
            await defer.gatherResults(
                [defer.ensureDeferred(client()) for _ in range(20)],
                consumeErrors=True,
            )
        finally:
            flipper.stop()
        last = "a" if (await self.health(proxy))["mode"] == "b" else "b"
        replaceFile(modeFile, last + "\n")
        flipsDone = reactor.seconds()
        await self.waitForHealth(
            proxy,
            lambda h: (
                (h["mode"], h["mode_source"], h["mode_file_problem"])
                == (last, "file", None)
            ),
            "the last mode written",
            timeout=2.0,
        )
        settled = reactor.seconds() - flipsDone

        self.assertEqual({code for code, _ in results}, {200})
        bodies = [body for _, body in results]
        wholeA, wholeB = b"".join(eventsA), b"".join(eventsB)
        self.assertEqual(
            [body[:200] for body in bodies if body not in (wholeA, wholeB)], []
        )
        self.assertGreater(bodies.count(wholeA), 0)
        self.assertGreater(bodies.count(wholeB), 0)
        self.assertEqual(len(mockA.requests) + len(mockB.requests), len(results))
        self.assertGreater(flips[0], 100)
        self.assertLess(settled, 2.0)
        self.assertRunning(proxy)
        self.assertNotIn(b"Traceback", proxy.output)
        health = await self.health(proxy)
        self.assertIsNone(health["auto_switch"])

    async def test_reloadWhileStreaming(self) -> None:
        """
        C9: a reload that removes the upstream five streams are coming
        from and rotates the key: the streams finish from it byte for byte,
        with the key they started with; the next request goes to the new
        upstream with the new key; the breaker of a target kept by name
        keeps its state.
        """
        oldMock = self.upstream(respondJSON(anthropicMessage("from old")))
        newMock = self.upstream(respondJSON(anthropicMessage("from new")))
        primaryMock = self.upstream(
            respondJSON(anthropicError("overloaded_error", "busy"), status=529)
        )

        def configText(default: MockUpstream, key: str) -> str:
            return f"""
default:
  url: "{default.url}"
  auth: {{header: x-api-key, value: "${{{key}}}"}}
upstreams:
  primary: {{url: "{primaryMock.url}"}}
breaker: {{failures: 3, cooldowns: [60s]}}
default_mode: auto
modes:
  auto: {{failover: [primary, claude]}}
  claude: []
"""

        config = self.configFile(configText(oldMock, "KEY_ONE"))
        proxy = await self.start(
            config, {"KEY_ONE": "key-one-C9", "KEY_TWO": "key-two-C9"}
        )
        assert proxy.pid is not None
        for _ in range(3):
            self.assertEqual(await self.text(proxy), "from old")
        before = (await self.health(proxy))["targets"]["primary"]
        self.assertEqual((before["state"], before["opens"]), ("open", 1))

        events = anthropicStream(" ".join(["old"] * 60))
        oldMock.behaviour = respondEvents(events, spacing=0.04)
        responses = [
            await self.post(proxy, messageBody("claude-sonnet-4-5")) for _ in range(5)
        ]
        bodies = [defer.ensureDeferred(response.content()) for response in responses]
        replaceFile(config, configText(newMock, "KEY_TWO"))
        os.kill(proxy.pid, signal.SIGHUP)
        await self.waitForLog(proxy, b"config reloaded")
        self.assertEqual(await self.text(proxy), "from new")
        self.assertFalse(all(body.called for body in bodies), "streams ended early")

        self.assertEqual([response.code for response in responses], [200] * 5)
        self.assertEqual(await defer.gatherResults(bodies), [b"".join(events)] * 5)
        self.assertEqual(
            {request.header(b"x-api-key")[0] for request in oldMock.requests},
            {b"key-one-C9"},
        )
        [toNew] = newMock.requests
        self.assertEqual(toNew.header(b"x-api-key"), [b"key-two-C9"])
        after = (await self.health(proxy))["targets"]["primary"]
        self.assertEqual((after["state"], after["opens"]), ("open", 1))
        self.assertEqual(len(primaryMock.requests), 3)


class SecretTests(ModesCase):
    async def test_healthShowsNoSecrets(self) -> None:
        """
        S13: neither the client's key nor an upstream's configured key reaches
        C{/health} or the log: not through failure reasons, not through a
        refused config whose URL holds the key.
        """
        keyedMock = self.upstream(
            respondJSON(anthropicError("authentication_error", "bad key"), status=401)
        )
        fallbackMock = self.upstream(respondJSON(anthropicMessage("from fallback")))
        environ = {"KEY": UPSTREAM_CANARY}
        auth = ', auth: {header: x-api-key, value: "${KEY}"}'
        config = self.configFile(
            failoverConfig(
                fallbackMock, keyedMock.url, "{failures: 3, cooldowns: [60s]}", auth
            )
        )
        proxy = await self.start(config, environ)
        clientKey = {b"x-api-key": [CLIENT_CANARY.encode()]}
        response = await self.post(
            proxy, messageBody("claude-sonnet-4-5", stream=False), clientKey
        )
        self.assertEqual(response.code, 200)
        await response.content()
        [keyed] = keyedMock.requests
        self.assertEqual(keyed.header(b"x-api-key"), [UPSTREAM_CANARY.encode()])
        [fallback] = fallbackMock.requests
        self.assertEqual(fallback.header(b"x-api-key"), [CLIENT_CANARY.encode()])

        # A config refused because of a URL that holds the key.
        replaceFile(
            config,
            failoverConfig(
                fallbackMock,
                f"{keyedMock.url}/?key=${{KEY}}",
                "{failures: 3, cooldowns: [60s]}",
                auth,
            ),
        )
        await self.waitForHealth(
            proxy,
            lambda h: h["config"]["last_reload"] is not None,
            "the refused config",
        )
        body = await self.healthBytes(proxy)
        document = json.loads(body)
        self.assertIn("401", document["targets"]["primary"]["last_failure"]["reason"])
        self.assertFalse(document["config"]["last_reload"]["ok"])
        for canary in (UPSTREAM_CANARY, CLIENT_CANARY):
            self.assertNotIn(canary.encode(), body)
        await proxy.stop()
        for canary in (UPSTREAM_CANARY, CLIENT_CANARY):
            self.assertNotIn(canary.encode(), proxy.output)
