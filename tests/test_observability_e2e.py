"""
Observability end to end: a real C{twistd -n ccrouter} with a failover mode
in front of real mock upstreams; requests sent through it must show up in
the status page (rendered in headless Chromium), in C{ccrouter stats} and
C{ccrouter status}, in C{/metrics} and in the request log.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.threads import deferToThread
from twisted.web.server import Request

from ccrouter.cli import main
from tests.browser import LivePage, parseDOM
from tests.mockupstream import (
    anthropicMessage,
    anthropicStream,
    respondEvents,
    respondJSON,
)
from tests.proxyprocess import ProxyProcess
from tests.test_end_to_end import messageBody
from tests.test_end_to_end_modes import ModesCase, failoverConfig

#: Where the page's screenshot is kept, under the test's temporary directory.
SCREENSHOT = "status-page.png"


def answerAsAsked(request: Request) -> Any:
    """
    An Anthropic upstream: a stream when the request asks for one.
    """
    assert request.content is not None
    request.content.seek(0)
    body = json.loads(request.content.read())
    if body.get("stream"):
        return respondEvents(anthropicStream("streamed"))(request)
    return respondJSON(anthropicMessage("whole"))(request)


def showsMode(html: str) -> bool:
    """
    Whether the page has had its first answers: the mode is shown.
    """
    modes = parseDOM(html).findAll(id="mode")
    return len(modes) == 1 and modes[0].text == "auto"


class ObservabilityEndToEndTests(ModesCase):
    timeout = 180

    async def send(self, proxy: ProxyProcess, stream: bool) -> str:
        response = await self.post(
            proxy, messageBody("claude-sonnet-4-5", stream=stream)
        )
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        [requestId] = response.headers.getRawHeaders(b"x-ccrouter-request-id")
        return str(requestId.decode("ascii"))

    async def ccrouter(self, port: int, *arguments: str) -> tuple[int, str]:
        home = Path(self.mktemp()).absolute()
        home.mkdir(parents=True)
        (home / "config.yaml").write_text(f"server: {{port: {port}}}\n")
        out, err = StringIO(), StringIO()
        environ = {"CCROUTER_HOME": str(home), "HOME": str(home)}
        code = await deferToThread(main, list(arguments), environ, out, err)
        return code, out.getvalue() + err.getvalue()

    async def test_requestsShowEverywhere(self) -> None:
        """
        With the status page open in headless Chromium, three requests
        through a failover mode whose first target is down (so each fails
        over to the second): the page, refreshing itself, comes to show the
        mode,
        both targets with their breaker states, each request by its id with
        its route and tokens, and a token chart with the serving target;
        C{ccrouter stats} and C{ccrouter status} list the same requests and
        tokens; C{/metrics} counts them.
        """
        primary = self.upstream(
            respondJSON(
                {"type": "error", "error": {"type": "api_error", "message": "down"}},
                status=500,
            )
        )
        fallback = self.upstream(answerAsAsked)
        proxy = await self.start(
            self.configFile(
                failoverConfig(fallback, primary.url, "{failures: 5, cooldowns: [60s]}")
            )
        )
        assert proxy.url is not None
        port = int(proxy.url.rsplit(":", 1)[1])
        # The page is open before the requests are sent: they must appear
        # through its own refreshes.
        page = await LivePage.open(f"{proxy.url}/status")
        self.addCleanup(page.close)
        before = parseDOM(await page.waitFor(showsMode))
        self.assertEqual(before.byId("mode").text, "auto")
        self.assertEqual(before.byId("requests").findAll("tr", data_request_id="*"), [])
        ids = [
            await self.send(proxy, stream=True),
            await self.send(proxy, stream=False),
            await self.send(proxy, stream=True),
        ]
        self.assertEqual(len(set(ids)), 3)

        def ready(html: str) -> bool:
            return all(f'data-request-id="{each}"' in html for each in ids)

        dom = parseDOM(await page.waitFor(ready))
        self.assertEqual(dom.byId("mode").text, "auto")
        targets = dom.byId("targets")
        self.assertEqual(
            targets.find(data_target="primary").attributes["data-state"], "closed"
        )
        self.assertEqual(
            targets.find(data_target="claude").attributes["data-state"], "closed"
        )
        rows = dom.byId("requests").findAll("tr", data_request_id="*")
        # Newest first.
        self.assertEqual([row.attributes["data-request-id"] for row in rows], ids[::-1])
        for row in rows:
            self.assertEqual(row.find("td", cls="target").text.strip(), "claude")
            self.assertEqual(row.find("td", cls="status").text.strip(), "200")
            self.assertIn("primary", row.find("td", cls="failover").text)
        chart = dom.byId("tokens-chart")
        self.assertEqual(
            [
                each.attributes["data-series"]
                for each in chart.findAll("g", data_series="*")
            ],
            ["claude"],
        )
        picture = Path(self.mktemp()).absolute() / SCREENSHOT
        picture.parent.mkdir(parents=True)
        await page.screenshot(picture)
        self.assertTrue(picture.read_bytes().startswith(b"\x89PNG"))

        # The terminal shows the same.
        code, text = await self.ccrouter(port, "stats", "--json")
        self.assertEqual(code, 0, text)
        [row] = json.loads(text)
        self.assertEqual(
            (row["target"], row["model"], row["requests"], row["errors"]),
            ("claude", "claude-sonnet-4-5", 3, 0),
        )
        streamUsage = json.loads(anthropicStream("streamed")[0].split(b"data: ")[1])
        streamed = streamUsage["message"]["usage"]["input_tokens"]
        whole = anthropicMessage("whole")["usage"]["input_tokens"]
        self.assertEqual(row["input_tokens"], 2 * streamed + whole)
        code, text = await self.ccrouter(port, "status", "--requests", "3")
        self.assertEqual(code, 0, text)
        self.assertEqual(text.count("claude-sonnet-4-5"), 3, text)

        response = await self.http.get(f"{proxy.url}/metrics")
        self.assertEqual(response.code, 200)
        families = {
            family.name: family
            for family in text_string_to_metric_families(
                (await response.content()).decode("utf-8")
            )
        }
        served = {
            tuple(sorted(sample.labels.items())): sample.value
            for sample in families["ccrouter_requests"].samples
            if sample.name == "ccrouter_requests_total"
        }
        self.assertEqual(
            served,
            {
                (
                    ("model", "claude-sonnet-4-5"),
                    ("status_class", "2xx"),
                    ("target", "claude"),
                ): 3.0
            },
        )
        failovers = [
            sample
            for sample in families["ccrouter_failovers"].samples
            if sample.name == "ccrouter_failovers_total"
        ]
        self.assertEqual(
            [(each.labels, each.value) for each in failovers],
            [({"from_target": "primary", "to_target": "claude"}, 3.0)],
        )
        # One request log line per request, carrying its id.
        await self.waitForLog(proxy, b"[ccrouter.requests#info]", count=3)
        for each in ids:
            self.assertEqual(proxy.output.count(f'"request_id":"{each}"'.encode()), 1)
