"""
Renders pages in headless Chromium for tests: the DOM after the page's
scripts ran (L{renderDOM}), a screenshot (L{screenshot}), and a small
parsed tree of the DOM to make assertions on (L{parseDOM}).

C{--virtual-time-budget} makes Chromium run the page's timers for that
many milliseconds of virtual time, and virtual time stands still while a
fetch is pending, so the dumped DOM holds what the page's fetches
returned without the test sleeping.

Without a Chromium binary the tests are skipped, unless C{CI} is set: CI
(C{.ci/run}) installs Chromium and must not skip them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

#: Names the browser goes by, in order of preference.
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: How long one Chromium run may take beyond its virtual time budget (a
#: cold start on a loaded 2-core box takes seconds).
SLACK_SECONDS = 60.0

_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--lang=en-US",
)


class BrowserError(Exception):
    """
    Chromium exited with an error, timed out, or produced nothing.
    """


def findChromium() -> str:
    """
    The path of a Chromium binary.

    @raise SkipTest: if there is none and C{CI} is not set.
    @raise BrowserError: if there is none and C{CI} is set.
    """
    for name in BINARIES:
        found = shutil.which(name)
        if found is not None:
            return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        raise BrowserError(
            f"CI is set but no Chromium was found (looked for {', '.join(BINARIES)})"
        )
    raise SkipTest("no Chromium binary; install Debian's chromium package")


class _Collector(ProcessProtocol):
    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.reason: Failure | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)


def _environment() -> dict[str, str]:
    # The browser needs no provider key; a test run may have some set.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_AUTH_TOKEN"))
    }


async def _run(arguments: list[str], timeout: float) -> bytes:
    """
    Run Chromium with a fresh profile, stopping it after C{timeout}
    seconds; fires with its standard output.
    """
    binary = findChromium()
    profile = tempfile.mkdtemp(prefix="ccrouter-chromium-")
    collector = _Collector()
    try:
        command = [binary, *_FLAGS, f"--user-data-dir={profile}", *arguments]
        transport = reactor.spawnProcess(collector, binary, command, env=_environment())
        # TERM lets the browser take its helper processes down with it;
        # KILL is for a browser that ignores TERM.
        term = reactor.callLater(timeout, transport.signalProcess, "TERM")
        kill = reactor.callLater(timeout + 10, transport.signalProcess, "KILL")
        await collector.ended
        timedOut = not term.active()
        for call in (term, kill):
            if call.active():
                call.cancel()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert collector.reason is not None
    exitCode = getattr(collector.reason.value, "exitCode", None)
    if timedOut or exitCode != 0:
        why = f"timed out after {timeout} s" if timedOut else f"exited {exitCode}"
        tail = bytes(collector.stderr[-2000:]).decode(errors="replace")
        raise BrowserError(f"chromium {why}: {' '.join(arguments)}\n{tail}")
    return bytes(collector.stdout)


async def renderDOM(url: str, budgetMs: int = 4000) -> str:
    """
    The serialised DOM of C{url} after C{budgetMs} milliseconds of virtual
    time (the page's timers and fetches have run).
    """
    out = await _run(
        [f"--virtual-time-budget={budgetMs}", "--dump-dom", url],
        budgetMs / 1000 + SLACK_SECONDS,
    )
    if not out.strip():
        raise BrowserError(f"chromium dumped an empty DOM for {url}")
    return out.decode("utf-8")


async def renderDOMUntil(
    url: str, ready: Callable[[str], bool], budgetMs: int = 4000, attempts: int = 3
) -> str:
    """
    Render C{url} again (at most C{attempts} times) until C{ready} holds
    for its DOM, for pages whose data arrives from elsewhere; fires with
    the last DOM either way, for the test's assertions to explain.
    """
    dom = ""
    for _ in range(attempts):
        dom = await renderDOM(url, budgetMs)
        if ready(dom):
            break
    return dom


async def screenshot(
    url: str,
    path: str | Path,
    budgetMs: int = 4000,
    size: tuple[int, int] = (1280, 1000),
) -> None:
    """
    Save a PNG of C{url} after C{budgetMs} milliseconds of virtual time.
    """
    target = Path(path).resolve()
    target.unlink(missing_ok=True)
    await _run(
        [
            f"--virtual-time-budget={budgetMs}",
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            f"--screenshot={target}",
            url,
        ],
        budgetMs / 1000 + SLACK_SECONDS,
    )
    if not target.exists() or target.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {target}")


class _Pipe(ProcessProtocol):
    """
    Chromium's DevTools protocol over C{--remote-debugging-pipe}: it reads
    NUL-terminated JSON commands on its descriptor 3 and answers on 4.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._nextId = 0
        self._answers: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self.stderr = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def send(
        self, method: str, params: dict[str, Any], session: str | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        assert self.transport is not None
        self._nextId += 1
        message: dict[str, Any] = {"id": self._nextId, "method": method}
        message["params"] = params
        if session is not None:
            message["sessionId"] = session
        answer: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._answers[self._nextId] = answer
        self.transport.writeToChild(3, json.dumps(message).encode() + b"\0")
        return answer.addTimeout(SLACK_SECONDS, reactor)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self.stderr += data
            return
        if childFD != 4:
            return
        self._buffer += data
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            answer = self._answers.pop(message.get("id", -1), None)
            if answer is None:
                continue
            if "error" in message:
                answer.errback(BrowserError(f"DevTools: {message['error']}"))
            else:
                answer.callback(message.get("result", {}))

    def processEnded(self, reason: Failure) -> None:
        for answer in self._answers.values():
            answer.errback(BrowserError("chromium exited"))
        self._answers = {}
        self.ended.callback(None)


class LivePage:
    """
    A page kept open in headless Chromium, in real time, so that a test can
    act (send requests through the proxy) while the page refreshes itself,
    and then read its DOM.
    """

    def __init__(self, pipe: _Pipe, session: str, profile: str) -> None:
        self._pipe = pipe
        self._session = session
        self._profile = profile

    @classmethod
    async def open(cls, url: str) -> LivePage:
        binary = findChromium()
        profile = tempfile.mkdtemp(prefix="ccrouter-chromium-")
        pipe = _Pipe()
        command = [
            binary,
            *_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--window-size=1280,1000",
            "about:blank",
        ]
        reactor.spawnProcess(
            pipe,
            binary,
            command,
            env=_environment(),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )
        page = cls(pipe, "", profile)
        try:
            target = await pipe.send("Target.createTarget", {"url": url})
            attached = await pipe.send(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
            )
        except BaseException:
            await page.close()
            raise
        page._session = attached["sessionId"]
        return page

    async def dom(self) -> str:
        result = await self._pipe.send(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            self._session,
        )
        return str(result["result"]["value"])

    async def waitFor(self, ready: Callable[[str], bool], timeout: float = 20) -> str:
        """
        Read the DOM every 0.2 s until C{ready} holds for it, for at most
        C{timeout} seconds; fires with the last DOM either way.
        """
        dom = await self.dom()
        for _ in range(int(timeout / 0.2)):
            if ready(dom):
                break
            await deferLater(reactor, 0.2, lambda: None)
            dom = await self.dom()
        return dom

    async def screenshot(self, path: str | Path) -> None:
        result = await self._pipe.send("Page.captureScreenshot", {}, self._session)
        Path(path).write_bytes(base64.b64decode(result["data"]))

    async def close(self) -> None:
        pipe = self._pipe
        if not pipe.ended.called:
            # It may exit before it answers.
            with contextlib.suppress(Exception):
                await pipe.send("Browser.close", {})
            assert pipe.transport is not None
            kill = reactor.callLater(10, pipe.transport.signalProcess, "KILL")
            await pipe.ended
            if kill.active():
                kill.cancel()
        shutil.rmtree(self._profile, ignore_errors=True)


#: Elements that never have an end tag.
_VOID = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()
)


@define(eq=False)
class Element:
    """
    A node of the tree L{parseDOM} builds: enough to find elements by tag,
    id, class and attribute and read their text.
    """

    tag: str
    attributes: dict[str, str | None] = field(factory=dict)
    children: list[Element | str] = field(factory=list)

    def iter(self) -> Iterator[Element]:
        """
        This element and every element below it, in document order.
        """
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def findAll(
        self, tag: str | None = None, cls: str | None = None, **attributes: str
    ) -> list[Element]:
        """
        The elements below (and including) this one with tag C{tag}, class
        C{cls} and the given attribute values (C{data_target="zai"} means
        C{data-target}; a value of C{"*"} only asks for the attribute).
        """
        wanted = {name.replace("_", "-"): value for name, value in attributes.items()}
        found = []
        for each in self.iter():
            if tag is not None and each.tag != tag:
                continue
            if cls is not None and cls not in each.classes:
                continue
            if all(
                name in each.attributes and value in ("*", each.attributes[name])
                for name, value in wanted.items()
            ):
                found.append(each)
        return found

    def find(
        self, tag: str | None = None, cls: str | None = None, **attributes: str
    ) -> Element:
        """
        The one element L{findAll} finds.

        @raise LookupError: if there is none or more than one.
        """
        found = self.findAll(tag, cls, **attributes)
        if len(found) != 1:
            raise LookupError(
                f"{len(found)} elements match {tag} {cls} {attributes} below "
                f"<{self.tag}>"
            )
        return found[0]

    def byId(self, identifier: str) -> Element:
        return self.find(id=identifier)

    @property
    def classes(self) -> list[str]:
        return (self.attributes.get("class") or "").split()

    @property
    def text(self) -> str:
        """
        All text below this element, entities decoded.
        """
        return "".join(
            child if isinstance(child, str) else child.text for child in self.children
        )


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document")
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self._stack[-1].children.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the nearest open element of this name; a stray end tag
        # closes nothing.
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def parseDOM(html: str) -> Element:
    """
    A tree of the serialised DOM L{renderDOM} returns.
    """
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root
