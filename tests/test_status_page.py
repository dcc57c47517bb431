"""
Tests for L{ccrouter.statuspage} and the page it serves: the page's text
(no reactor), the resource over L{StubTreq}, and the page running in
headless Chromium against a stub ccrouter on 127.0.0.1 that serves the
real resource and canned C{/health} and C{/status/data} documents.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.statuspage import (
    CONTENT_SECURITY_POLICY,
    PAGE,
    StatusPageResource,
    contentSecurityPolicy,
)
from tests import browser
from tests.browser import Element, parseDOM, renderDOM, screenshot
from tests.mockupstream import MockUpstream

log = Logger()

HOSTILE_MODEL = "<img src=x onerror=alert(1)>"
HOSTILE_REASON = "<b>HTTP 529</b> (overloaded)"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
COOLDOWN = 125.0


def pageText() -> str:
    return PAGE.decode("utf-8")


def blocks(tag: str) -> list[str]:
    """
    The text of every C{tag} element, found without the module's parser.
    """
    return re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", pageText(), re.S | re.I)


def sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


class PageTextTests(SynchronousTestCase):
    """
    The page as shipped, read as text.
    """

    def test_nothingFromElsewhere(self) -> None:
        """
        No URL in the page points anywhere: no C{src}, no C{url(}, no
        C{@import}, no absolute or network-path reference; the one C{href}
        is the empty data: favicon (which keeps the browser from asking for
        C{/favicon.ico}).  The SVG namespace is a name, not a fetch.
        """
        page = pageText()
        self.assertEqual(re.findall(r"\bsrc\s*=", page), [])
        self.assertEqual(re.findall(r"url\(|@import", page, re.I), [])
        self.assertEqual(re.findall(r"href\s*=\s*\"([^\"]*)\"", page), ["data:,"])
        self.assertEqual(page.count(SVG_NAMESPACE), 1)
        rest = page.replace(SVG_NAMESPACE, "")
        self.assertEqual(re.findall(r"[a-z][a-z0-9+.-]*://", rest, re.I), [])
        self.assertEqual(re.findall(r"[\"'`(=]\s*//", rest), [])
        self.assertEqual(
            sorted(set(re.findall(r"getJSON\(\"([^\"]*)\"\)", page))),
            ["/health", "/status/data"],
        )
        self.assertEqual(re.findall(r"fetch\(\s*[\"'`]", page), [])

    def test_oneScriptOneStyle(self) -> None:
        self.assertEqual(len(re.findall(r"<script\b", pageText(), re.I)), 1)
        self.assertEqual(len(re.findall(r"<style\b", pageText(), re.I)), 1)
        self.assertEqual(len(blocks("script")), 1)
        self.assertEqual(len(blocks("style")), 1)

    def test_nothingTheContentSecurityPolicyBlocks(self) -> None:
        """
        No inline event handler and no C{style} attribute in the markup or
        set by the script: the policy allows neither.
        """
        page = pageText()
        self.assertEqual(re.findall(r"<[^>]*\son\w+\s*=", page), [])
        self.assertEqual(re.findall(r"<[^>]*\sstyle\s*=", page), [])
        self.assertNotIn('"style"', blocks("script")[0])
        self.assertNotIn("\r", page)

    def test_dataNeverBecomesMarkup(self) -> None:
        """
        The script builds the DOM with nodes and text only.
        """
        script = blocks("script")[0]
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "createContextualFragment",
            "DOMParser",
            "eval(",
            "Function(",
            "srcdoc",
        ]:
            self.assertNotIn(sink, script)

    def test_policyHashesThePage(self) -> None:
        """
        The policy is exactly the contract's, with the hashes of the page's
        own script and style.
        """
        script, style = blocks("script")[0], blocks("style")[0]
        self.assertEqual(
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; "
            f"script-src {sha256(script)}; "
            f"style-src {sha256(style)}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'",
        )

    def test_policyNeedsOneOfEach(self) -> None:
        page = "<html><head><style>a{}</style></head><body>BODY</body></html>"
        for body in ["", "<script>1</script><script>2</script>"]:
            self.assertRaises(
                ValueError, contentSecurityPolicy, page.replace("BODY", body)
            )
        policy = contentSecurityPolicy(page.replace("BODY", "<script>x()</script>"))
        self.assertIn(f"script-src {sha256('x()')};", policy)
        self.assertIn(f"style-src {sha256('a{}')};", policy)


class ResourceTests(SynchronousTestCase):
    """
    L{StatusPageResource} in memory.
    """

    def setUp(self) -> None:
        self.client = StubTreq(StatusPageResource())

    def test_get(self) -> None:
        response = self.successResultOf(self.client.get("http://127.0.0.1/status"))
        self.assertEqual(response.code, 200)
        headers = response.headers
        expected = {
            b"content-type": [b"text/html; charset=utf-8"],
            b"cache-control": [b"no-store"],
            b"x-content-type-options": [b"nosniff"],
            b"referrer-policy": [b"no-referrer"],
            b"x-frame-options": [b"DENY"],
            b"content-security-policy": [CONTENT_SECURITY_POLICY.encode()],
        }
        for name, values in expected.items():
            self.assertEqual(headers.getRawHeaders(name), values, name)
        self.assertEqual(self.successResultOf(response.content()), PAGE)

    def test_head(self) -> None:
        response = self.successResultOf(self.client.head("http://127.0.0.1/status"))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-security-policy"),
            [CONTENT_SECURITY_POLICY.encode()],
        )
        self.assertEqual(self.successResultOf(response.content()), b"")

    def test_otherMethods(self) -> None:
        for method in ["POST", "PUT", "DELETE"]:
            response = self.successResultOf(
                self.client.request(method, "http://127.0.0.1/status", data=b"x")
            )
            self.assertEqual(response.code, 405, method)
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(body["type"], "error")
            self.assertEqual(body["error"]["type"], "invalid_request_error")


class FindChromiumTests(SynchronousTestCase):
    """
    Without a browser the browser tests skip, except under CI.
    """

    def withBrowsers(self, found: dict[str, str], environ: dict[str, str]) -> None:
        self.patch(shutil, "which", found.get)
        self.patch(os, "environ", environ)

    def test_found(self) -> None:
        self.withBrowsers({"google-chrome": "/opt/chrome"}, {"CI": "true"})
        self.assertEqual(browser.findChromium(), "/opt/chrome")
        self.withBrowsers(
            {"chromium": "/usr/bin/chromium", "google-chrome": "/opt/chrome"}, {}
        )
        self.assertEqual(browser.findChromium(), "/usr/bin/chromium")

    def test_missing(self) -> None:
        for environ in [{}, {"CI": ""}, {"CI": "false"}]:
            self.withBrowsers({}, environ)
            self.assertRaises(SkipTest, browser.findChromium)
        for environ in [{"CI": "true"}, {"CI": "1"}]:
            self.withBrowsers({}, environ)
            self.assertRaises(browser.BrowserError, browser.findChromium)


def timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def healthDocument(now: datetime) -> dict[str, Any]:
    """
    A C{/health} answer in failover mode C{auto}: C{anthropic} is open
    (cooling down for L{COOLDOWN} seconds), C{zai} serves.
    """
    closed = {
        "kind": "mode",
        "state": "closed",
        "consecutive_failures": 0,
        "consecutive_timeouts": 0,
        "cooldown_remaining_seconds": 0.0,
        "cooldown_until": None,
        "cooldown_source": None,
        "next_cooldown_seconds": 60.0,
        "opens": 0,
        "probing": False,
        "last_failure": None,
        "requests": 7,
        "failures": 0,
    }
    return {
        "status": "degraded",
        "version": "0.1.0",
        "pid": 4242,
        "uptime_seconds": 3725.5,
        "active_requests": 2,
        "max_streams": 64,
        "log_write_errors": 0,
        "config": {"path": "/c.yaml", "loaded_at": timestamp(now), "last_reload": None},
        "mode": "auto",
        "mode_source": "file",
        "mode_file_problem": None,
        "default_mode": "claude",
        "modes": ["claude", "auto", "zai"],
        "auto_switch": {
            "targets": ["anthropic", "zai"],
            "preferred": "anthropic",
            "current": "zai",
            "switched": True,
            "failovers": 4,
        },
        "targets": {
            "anthropic": {
                **closed,
                "state": "open",
                "consecutive_failures": 3,
                "consecutive_timeouts": 1,
                "cooldown_remaining_seconds": COOLDOWN,
                "cooldown_until": timestamp(now + timedelta(seconds=COOLDOWN)),
                "cooldown_source": "schedule",
                "opens": 1,
                "last_failure": {
                    "reason": HOSTILE_REASON,
                    "at": timestamp(now - timedelta(seconds=20)),
                    "seconds_ago": 20.0,
                },
                "requests": 12,
                "failures": 3,
            },
            "zai": closed,
        },
    }


def requestEntry(now: datetime, ago: float, **fields: Any) -> dict[str, Any]:
    entry = {
        "request_id": "",
        "at": timestamp(now - timedelta(seconds=ago)),
        "method": "POST",
        "path": "/v1/messages",
        "client_model": "claude-sonnet-4-5",
        "upstream_model": None,
        "mode": "auto",
        "route": None,
        "target": "zai",
        "attempts": 1,
        "failover_path": ["zai"],
        "status": 200,
        "streamed": True,
        "ttfb_ms": 100.0,
        "duration_ms": 900.0,
        "bytes_in": 1000,
        "bytes_out": 2000,
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "stop_reason": "end_turn",
        "error": None,
        "client_disconnected": False,
    }
    entry.update(fields)
    return entry


#: Request ids of the canned C{recent} list, newest first.
REQUEST_IDS = [
    "ccr_000000000000000000000003",
    "ccr_000000000000000000000002",
    "ccr_000000000000000000000001",
]


def statusDocument(now: datetime) -> dict[str, Any]:
    """
    A C{/status/data} answer: a hostile model name, a failed-over request
    and a plain one; tokens for both targets in the last hour.
    """
    anthropic = [0] * 60
    zai = [0] * 60
    anthropic[10], anthropic[11] = 5000, 2500
    zai[40], zai[58], zai[59] = 1540, 800, 12000
    return {
        "generated_at": timestamp(now),
        "uptime_seconds": 3725.5,
        "recent": [
            requestEntry(
                now,
                2,
                request_id=REQUEST_IDS[0],
                client_model=HOSTILE_MODEL,
                target=None,
                failover_path=[],
                attempts=0,
                status=400,
                ttfb_ms=None,
                duration_ms=1.5,
                input_tokens=None,
                output_tokens=None,
                stop_reason=None,
                error="local",
            ),
            requestEntry(
                now,
                30,
                request_id=REQUEST_IDS[1],
                upstream_model="glm-4.6",
                route="claude-sonnet-*",
                attempts=2,
                failover_path=["anthropic", "zai"],
                ttfb_ms=312.5,
                duration_ms=4100.2,
                input_tokens=1200,
                output_tokens=340,
            ),
            requestEntry(
                now,
                90,
                request_id=REQUEST_IDS[2],
                target="anthropic",
                failover_path=["anthropic"],
                streamed=False,
            ),
        ],
        "tokens_per_minute": {
            "step_seconds": 60,
            "start": timestamp(now.replace(second=0) - timedelta(minutes=59)),
            "targets": {"anthropic": anthropic, "zai": zai},
        },
        "totals": [
            {
                "target": "zai",
                "model": "glm-4.6",
                "requests": 12,
                "errors": 1,
                "input_tokens": 15000,
                "output_tokens": 4000,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
            }
        ],
    }


Behaviour = Callable[[Request], "bytes | int"]


def answerJSON(document: Callable[[], dict[str, Any]]) -> Behaviour:
    def behaviour(request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(document()).encode()

    return behaviour


def answerError(request: Request) -> bytes:
    request.setResponseCode(500)
    return b"boom"


def closeConnection(request: Request) -> int:
    request.transport.abortConnection()  # type: ignore[union-attr]
    return NOT_DONE_YET


def afterFirst(first: Behaviour, rest: Behaviour, count: int = 1) -> Behaviour:
    """
    C{first} for the first C{count} requests, C{rest} after them.
    """
    seen = [0]

    def behaviour(request: Request) -> bytes | int:
        seen[0] += 1
        return (first if seen[0] <= count else rest)(request)

    return behaviour


class StubCcrouter:
    """
    What the page needs of ccrouter, on 127.0.0.1: the real
    L{StatusPageResource} at C{/status}, and C{/health} and
    C{/status/data} answered by behaviours the test picks.
    """

    def __init__(self, health: Behaviour, data: Behaviour) -> None:
        self.page = StatusPageResource()
        self.health = health
        self.data = data
        self.upstream = MockUpstream(behaviour=self.dispatch)

    def dispatch(self, request: Request) -> bytes | int:
        path = request.uri.split(b"?", 1)[0]
        if path == b"/status":
            return self.page.render(request)
        if path == b"/health":
            return self.health(request)
        if path == b"/status/data":
            return self.data(request)
        request.setResponseCode(404)
        return b"not found"

    @property
    def url(self) -> str:
        return self.upstream.url + "/status"

    def paths(self) -> list[bytes]:
        return [each.uri for each in self.upstream.requests]


class BrowserTests(TestCase):
    """
    The page in headless Chromium.
    """

    def setUp(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def serve(self, health: Behaviour, data: Behaviour | None = None) -> StubCcrouter:
        stub = StubCcrouter(
            health, data or answerJSON(lambda: statusDocument(self.now))
        )
        stub.upstream.listen()
        self.addCleanup(stub.upstream.stop)
        return stub

    def healthy(self) -> Behaviour:
        return answerJSON(lambda: healthDocument(self.now))

    def assertNoCSPViolation(self, dom: Element) -> None:
        self.assertEqual(dom.find("html").attributes.get("data-csp-violations"), None)

    def assertBanner(self, dom: Element, shown: bool) -> None:
        banner = dom.byId("offline")
        self.assertEqual("hidden" not in banner.attributes, shown, banner.text)
        if shown:
            self.assertIn("ccrouter is not answering", banner.text)

    def countdownSeconds(self, dom: Element) -> int:
        card = dom.byId("targets").find(data_target="anthropic")
        countdown = card.find(cls="countdown")
        match = re.fullmatch(r"Cooling down: (\d+):(\d\d) left", countdown.text)
        assert match is not None, countdown.text
        seconds = int(match.group(1)) * 60 + int(match.group(2))
        self.assertEqual(countdown.attributes["data-seconds"], str(seconds))
        return seconds

    async def test_showsLiveData(self) -> None:
        """
        Everything the two documents say is on the page, served with its
        Content-Security-Policy; the hostile model name is text.
        """
        stub = self.serve(self.healthy())
        html = await renderDOM(stub.url)
        dom = parseDOM(html)
        self.assertNoCSPViolation(dom)
        self.assertBanner(dom, shown=False)

        self.assertEqual(dom.byId("mode").text, "auto")
        modes = dom.byId("modes").findAll("li")
        self.assertEqual([each.text for each in modes], ["claude", "auto", "zai"])
        self.assertEqual(
            [
                each.attributes["data-mode"]
                for each in modes
                if "aria-current" in each.attributes
            ],
            ["auto"],
        )
        self.assertEqual(dom.byId("status").text, "degraded")
        self.assertEqual(dom.byId("active").text, "2 / 64")
        self.assertEqual(dom.byId("version").text, "0.1.0")
        self.assertRegex(dom.byId("uptime").text, r"^1 h 2 min$")

        targets = dom.byId("targets")
        anthropic = targets.find(data_target="anthropic")
        zai = targets.find(data_target="zai")
        self.assertEqual(anthropic.attributes["data-state"], "open")
        self.assertEqual(anthropic.find(cls="state").text, "open")
        self.assertEqual(zai.attributes["data-state"], "closed")
        self.assertEqual(zai.find(cls="state").text, "closed")
        self.assertEqual(zai.find(cls="countdown").text, "")
        self.assertLessEqual(self.countdownSeconds(dom), COOLDOWN)
        self.assertEqual(
            anthropic.find(cls="reason").text,
            f"Last failure: {HOSTILE_REASON} (20 s ago)",
        )
        self.assertEqual(
            anthropic.find(cls="failures").text,
            "3 consecutive failures (1 timeout)",
        )
        self.assertEqual(zai.find(cls="current").text, "serving now")

        rows = dom.byId("requests").findAll("tr", data_request_id="*")
        self.assertEqual(
            [row.attributes["data-request-id"] for row in rows], REQUEST_IDS
        )
        hostile, failedOver, plain = rows
        self.assertEqual(hostile.find(cls="model").text, HOSTILE_MODEL)
        self.assertEqual(hostile.find(cls="status").text, "400")
        self.assertEqual(hostile.find(cls="error").text, "local")
        self.assertIn("failed", hostile.classes)
        columns = ["model", "target", "route", "status", "ttfb", "duration"]
        columns += ["tokens", "stop", "error", "failover"]
        cells = {name: failedOver.find("td", cls=name).text for name in columns}
        self.assertEqual(
            cells,
            {
                "model": "claude-sonnet-4-5 \u2192 glm-4.6",
                "target": "zai",
                "route": "claude-sonnet-*",
                "status": "200",
                "ttfb": "313 ms",
                "duration": "4.1 s",
                "tokens": "1,200 / 340",
                "stop": "end_turn",
                "error": "",
                "failover": "anthropic \u2192 zai (2 attempts)",
            },
        )
        self.assertEqual(plain.find(cls="target").text, "anthropic")
        self.assertEqual(plain.find(cls="failover").text, "")

        # Markup in data stayed text: no element came from it.
        tags = {each.tag for each in dom.iter()}
        self.assertNotIn("img", tags)
        self.assertNotIn("b", tags)
        handlers = [
            (each.tag, name)
            for each in dom.iter()
            for name in each.attributes
            if name.startswith("on")
        ]
        self.assertEqual(handlers, [])

        chart = dom.byId("tokens-chart").find("svg")
        series = {
            group.attributes["data-series"]: len(group.findAll("rect"))
            for group in chart.findAll("g", data_series="*")
        }
        self.assertEqual(series, {"anthropic": 2, "zai": 3})
        legend = dom.byId("tokens-legend").findAll("li")
        self.assertEqual(
            [each.text for each in legend],
            ["anthropic \u00b7 7,500 tokens", "zai \u00b7 14,340 tokens"],
        )
        labels = [each.text for each in chart.findAll("text")]
        self.assertIn("20k", labels)
        self.assertIn("0", labels)

        totals = dom.byId("totals").find("tr", data_target="zai", data_model="glm-4.6")
        self.assertEqual(
            [cell.text for cell in totals.findAll("td")],
            ["zai", "glm-4.6", "12", "1", "15,000", "4,000", "0", "0"],
        )

        # The page asked for itself and its two documents, nothing else;
        # the fetches are same-origin, which ccrouter's guard lets through.
        self.assertEqual(set(stub.paths()), {b"/status", b"/health", b"/status/data"})
        for each in stub.upstream.requests:
            if each.uri != b"/status":
                self.assertEqual(each.header(b"origin"), [])
                self.assertEqual(each.header(b"sec-fetch-site"), [b"same-origin"])

        path = Path("status-page.png").resolve()
        await screenshot(stub.url, path)
        self.assertGreater(path.stat().st_size, 0)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        log.info("status page screenshot: {path}", path=str(path))

    async def test_countdownTicksWhileNotAnswering(self) -> None:
        """
        Once ccrouter stops answering, the banner says so, the last data
        stays, and the cooldown goes on counting down in the page.
        """
        stub = self.serve(afterFirst(self.healthy(), answerError))
        dom = parseDOM(await renderDOM(stub.url))
        self.assertNoCSPViolation(dom)
        self.assertBanner(dom, shown=True)
        self.assertIn("/health answered HTTP 500", dom.byId("offline").text)
        self.assertIn("stale", dom.find("body").classes)
        self.assertLess(self.countdownSeconds(dom), COOLDOWN)
        self.assertEqual(
            len(dom.byId("requests").findAll("tr", data_request_id="*")), 3
        )
        self.assertGreater(stub.paths().count(b"/health"), 1)

    async def test_bannerWhenConnectionCloses(self) -> None:
        stub = self.serve(closeConnection)
        dom = parseDOM(await renderDOM(stub.url))
        self.assertNoCSPViolation(dom)
        self.assertBanner(dom, shown=True)
        self.assertIn("/health: no connection", dom.byId("offline").text)
        self.assertEqual(dom.byId("status").text, "not answering")
        self.assertEqual(dom.byId("mode").text, "\u2014")
        self.assertEqual(dom.byId("requests").findAll("tr", data_request_id="*"), [])

    async def test_bannerGoesWhenAnswering(self) -> None:
        """
        The page recovers by itself once ccrouter answers again.
        """
        stub = self.serve(afterFirst(answerError, self.healthy()))
        dom = parseDOM(await renderDOM(stub.url))
        self.assertNoCSPViolation(dom)
        self.assertBanner(dom, shown=False)
        self.assertNotIn("stale", dom.find("body").classes)
        self.assertEqual(dom.byId("mode").text, "auto")
        self.assertEqual(
            len(dom.byId("requests").findAll("tr", data_request_id="*")), 3
        )
        self.assertGreater(stub.paths().count(b"/health"), 1)
