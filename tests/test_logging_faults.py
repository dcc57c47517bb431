"""
Logging that never breaks or blocks serving: a log file that cannot be
written (disk full, read-only, rotation failing), and a standard output
nobody reads (L{ccrouter.logs}).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import (
    LogLevel,
    eventAsJSON,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ccrouter import logs
from ccrouter.logs import (
    BackgroundWriter,
    JSONFields,
    LogDrops,
    LogFileSink,
    SafeObserver,
    WriteProblems,
    fileObserver,
    formatLine,
)
from tests.mockupstream import MockUpstream, anthropicMessage, respondJSON
from tests.proxyprocess import REPOSITORY, childEnvironment, twistdCommand
from tests.test_end_to_end import freePort, messageBody


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ChildProcess(ProcessProtocol):
    """
    A child whose standard error (and standard output, unless the test
    gives it a descriptor of its own) is collected.
    """

    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.exitCode: int | None = None
        self.done = False
        self.pid: int | None = None
        self._waiting: list[defer.Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessTerminated):
            self.exitCode = reason.value.exitCode
        elif reason.check(ProcessDone):
            self.exitCode = 0
        self.done = True
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(None)

    def ended(self, timeout: float) -> defer.Deferred[None]:
        """
        Fires once the child has exited; fails after C{timeout} seconds.
        """
        if self.done:
            return defer.succeed(None)
        deferred: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(deferred)
        return deferred.addTimeout(timeout, reactor)

    async def stop(self) -> None:
        """
        SIGTERM, then SIGKILL if it has not ended 15 seconds later.
        """
        if self.done:
            return
        assert self.transport is not None
        self.transport.signalProcess("TERM")
        try:
            await self.ended(15)
        except defer.TimeoutError:
            self.transport.signalProcess("KILL")
            await self.ended(15)


def spawnTwistd(
    testCase: TestCase,
    twistdOptions: list[str],
    pluginOptions: list[str],
    environ: dict[str, str] | None = None,
    childFDs: dict[int, Any] | None = None,
    prefix: list[str] | None = None,
) -> ChildProcess:
    """
    C{twistd -n --pidfile= OPTIONS ccrouter PLUGIN-OPTIONS} as a child
    (run through C{prefix}, e.g. C{setpriv}), stopped when the test ends.
    """
    command = [
        *(prefix or []),
        *twistdCommand(),
        "-n",
        "--pidfile=",
        *twistdOptions,
        "ccrouter",
        *pluginOptions,
    ]
    child = ChildProcess()
    transport = reactor.spawnProcess(
        child,
        command[0],
        command,
        env=childEnvironment(environ),
        childFDs=childFDs or {0: "w", 1: "r", 2: "r"},
    )
    child.pid = transport.pid
    testCase.addCleanup(lambda: defer.ensureDeferred(child.stop()))
    return child


async def waitUntil(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    """
    Poll C{condition} (an async callable) every 50 ms until it holds, for at
    most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


class HTTPCase(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(self.pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    async def get(
        self, url: str, headers: dict[bytes, list[bytes]] | None = None
    ) -> tuple[int, bytes]:
        response = await self.http.get(url, headers=headers).addTimeout(10, reactor)
        body = await response.content()
        return response.code, body

    async def answers(self, url: str) -> bool:
        try:
            code, _ = await self.get(url)
        except Exception:
            return False
        return code == 200

    def writeConfig(self, text: str) -> str:
        path = Path(self.mktemp()).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def mock(self) -> MockUpstream:
        upstream = MockUpstream(respondJSON(anthropicMessage("hello")))
        upstream.listen()
        self.addCleanup(upstream.stop)
        return upstream


class UnreadStandardOutputTests(HTTPCase):
    async def test_unreadPipeDoesNotStallServing(self) -> None:
        """
        F23: under C{twistd -n}, standard output is a pipe nobody reads (a
        paused terminal, a stuck journald): after far more log lines than
        the pipe and the queue hold, C{/health} still answers every time;
        lines beyond the queue are dropped, and once the pipe is read again
        the log resumes with a note of how many were lost.
        """
        port = freePort()
        config = self.writeConfig(f'default: {{url: "{self.mock().url}"}}\n')
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        spawnTwistd(
            self,
            [],
            ["--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1"],
            childFDs={0: "w", 1: write, 2: "r"},
        )
        os.close(write)
        url = f"http://127.0.0.1:{port}/health"
        await waitUntil(lambda: self.answers(url), what="the proxy to answer")

        # Each access line (of a refused request: those that get through
        # are in the request log instead) carries a long user agent and
        # path: the 64 KiB pipe fills after ~100 requests, the 1 MiB queue
        # after ~1500.
        agent = b"A" * 300
        latencies = []
        for index in range(2200):
            started = time.monotonic()
            code, _ = await self.get(
                f"{url}?{index}-{'p' * 300}",
                {b"user-agent": [agent], b"origin": [b"https://elsewhere.example"]},
            )
            latencies.append(time.monotonic() - started)
            self.assertEqual(code, 403)
        latencies.sort()
        # Stalled, a request would never be answered (the 10 s timeout of
        # get() fails the test); this bound is only against a partial stall.
        self.assertLess(latencies[-1], 5.0)

        os.set_blocking(read, False)
        received = bytearray()

        def readAvailable() -> bytes:
            while True:
                try:
                    chunk = os.read(read, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                received.extend(chunk)
            return bytes(received)

        async def holds(text: bytes) -> bool:
            return text in readAvailable()

        await waitUntil(
            lambda: holds(b"log lines were dropped: the output was not being read"),
            what="the note of dropped lines",
        )
        self.assertIn(b"listening on http://127.0.0.1:", received)
        # Every line is one whole record: none was cut or interleaved.
        for line in bytes(received).splitlines():
            self.assertRegex(line, rb"^\d{4}-\d\d-\d\dT")
        # And the log goes on.
        await self.get(
            f"{url}?after-the-drain", {b"origin": [b"https://elsewhere.example"]}
        )
        await waitUntil(
            lambda: holds(b"after-the-drain"), what="a line logged after the drain"
        )


class FullDiskProcessTests(HTTPCase):
    async def test_daemonLogOnFullDisk(self) -> None:
        """
        F24: the daemon's log observer writing to C{/dev/full} (every write
        fails with ENOSPC): 200 proxied requests all succeed, and the
        problem is said once on standard error; C{/health} counts the lines
        lost.
        """
        upstream = self.mock()
        port = freePort()
        config = self.writeConfig(f'default: {{url: "{upstream.url}"}}\n')
        child = spawnTwistd(
            self,
            ["--logger", "ccrouter.logs.daemonObserver"],
            ["--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1"],
            {"CCROUTER_LOG_FILE": "/dev/full"},
        )
        url = f"http://127.0.0.1:{port}"
        await waitUntil(lambda: self.answers(f"{url}/health"), what="the proxy")
        failed = 0
        for _ in range(200):
            response = await self.http.post(
                f"{url}/v1/messages",
                data=messageBody("claude-sonnet-4-5", stream=False),
                headers={b"content-type": [b"application/json"]},
            ).addTimeout(10, reactor)
            body = await response.content()
            if response.code != 200 or json.loads(body) != anthropicMessage("hello"):
                failed += 1
        self.assertEqual(failed, 0)
        self.assertEqual(len(upstream.requests), 200)
        self.assertEqual(
            child.stderr.count(b"cannot write the log /dev/full"), 1, child.stderr
        )
        self.assertNotIn(b"Traceback", child.stdout + child.stderr)
        code, body = await self.get(f"{url}/health")
        self.assertEqual(code, 200)
        # At least one access line per request was lost.
        self.assertGreaterEqual(json.loads(body)["log_write_errors"], 200)


class LogFileSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.reports: list[str] = []
        self.clock = FakeClock()

    def sink(self, path: str | Path, **kwargs: Any) -> LogFileSink:
        return LogFileSink(
            str(path),
            report=self.reports.append,
            note=lambda text: (json.dumps({"note": text}) + "\n").encode(),
            clock=self.clock,
            **kwargs,
        )

    def test_diskFull(self) -> None:
        """
        F24: every write to C{/dev/full} fails with ENOSPC: nothing raises,
        each line is counted as dropped, and the problem is reported once,
        not once per line.
        """
        device = os.stat("/dev/full")
        sink = self.sink("/dev/full")
        before = LogDrops.count
        for index in range(100):
            sink.write(b'{"line": %d}\n' % index)
            self.clock.now += 0.3
        self.assertEqual(LogDrops.count - before, 100)
        self.assertEqual(sink.problems.dropped, 100)
        self.assertEqual(len(self.reports), 1, self.reports)
        self.assertIn("cannot write the log /dev/full", self.reports[0])
        self.assertIn(os.strerror(errno.ENOSPC), self.reports[0])
        # A device is never rotated (renamed) away, nor has its mode changed.
        after = os.stat("/dev/full")
        self.assertEqual((after.st_ino, after.st_mode), (device.st_ino, device.st_mode))

    def test_resumesWhenSpaceReturns(self) -> None:
        """
        F24: writes that failed resume by themselves once the log can be
        written again (here a link first to C{/dev/full}, then to a file),
        with a note in the log of how many lines were lost; the recovery is
        reported, and a new failure is reported again.
        """
        self.directory.mkdir(parents=True)
        link = self.directory / "ccrouter.log"
        link.symlink_to("/dev/full")
        sink = self.sink(link)
        sink.write(b'{"lost": 1}\n')
        sink.write(b'{"lost": 2}\n')
        self.assertEqual(len(self.reports), 1)

        real = self.directory / "real.log"
        link.unlink()
        link.symlink_to(real)
        sink.write(b'{"lost": 3}\n')  # still before the retry time
        self.clock.now += 1.0
        sink.write(b'{"kept": 1}\n')
        lines = [json.loads(line) for line in real.read_text().splitlines()]
        self.assertEqual(
            lines,
            [
                {"kept": 1},
                {"note": f"3 log lines were dropped: {link} could not be written"},
            ],
        )
        self.assertEqual(len(self.reports), 2)
        self.assertIn("works again; 3 log lines were dropped", self.reports[1])

        link.unlink()
        link.symlink_to("/dev/full")
        sink.close()  # as if the file had been closed after an error
        sink.write(b'{"lost": 4}\n')
        self.assertEqual(len(self.reports), 3)
        self.assertIn("cannot write", self.reports[2])

    def test_directoryCannotBeCreated(self) -> None:
        """
        F24: a log whose directory cannot exist (a file is in the way):
        reported once, lines dropped, and opening is tried again only every
        L{RETRY_SECONDS}, not for each line.
        """
        self.directory.mkdir(parents=True)
        (self.directory / "state").write_text("a file")
        sink = self.sink(self.directory / "state" / "ccrouter.log")
        for _ in range(50):
            sink.write(b"{}\n")
        self.assertEqual(sink.problems.dropped, 50)
        self.assertEqual(len(self.reports), 1)

    def test_rotation(self) -> None:
        """
        S14: the log and its rotated files are 0600 in a 0700 directory
        (created under umask 022); the newest old file is C{.1}, at most
        C{keep} are kept.
        """
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        path = self.directory / "state" / "ccrouter.log"
        sink = self.sink(path, rotateBytes=100, keep=2)
        for index in range(40):
            sink.write(b'{"line": %02d, "padding": "xxxxxxxxxx"}\n' % index)
        sink.close()
        names = sorted(p.name for p in path.parent.iterdir())
        self.assertEqual(names, ["ccrouter.log", "ccrouter.log.1", "ccrouter.log.2"])
        for name in names:
            self.assertEqual((path.parent / name).stat().st_mode & 0o777, 0o600)
        self.assertEqual(path.parent.stat().st_mode & 0o777, 0o700)
        self.assertEqual(self.directory.stat().st_mode & 0o777, 0o700)
        self.assertIn(b'"line": 39', path.read_bytes())
        self.assertIn(b'"line": 37', (path.parent / "ccrouter.log.1").read_bytes())
        self.assertEqual(self.reports, [])

    def test_rotationFails(self) -> None:
        """
        F24: when rotating fails (here C{NAME.1} is a directory), lines keep
        going to the current file and the failure is reported once.
        """
        path = self.directory / "ccrouter.log"
        self.directory.mkdir(parents=True)
        (self.directory / "ccrouter.log.1").mkdir()
        (self.directory / "ccrouter.log.1" / "inside").write_text("x")
        sink = self.sink(path, rotateBytes=50, keep=1)
        for index in range(20):
            sink.write(b'{"line": %02d, "padding": "xxxxxxxxxx"}\n' % index)
            self.clock.now += 0.5
        self.assertEqual(len(path.read_bytes().splitlines()), 20)
        self.assertEqual(sink.problems.dropped, 0)
        self.assertEqual(len(self.reports), 1, self.reports)
        self.assertIn("rotating it", self.reports[0])

    def test_existingLooseFileTightened(self) -> None:
        """
        S14: a log file left 0644 (by an older version) is made 0600.
        """
        self.directory.mkdir(parents=True)
        path = self.directory / "ccrouter.log"
        path.write_text("")
        path.chmod(0o644)
        self.sink(path).write(b"{}\n")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)


class ReadOnlyDirectoryTests(SynchronousTestCase):
    def test_readOnlyDirectory(self) -> None:
        """
        F24: a log in a directory the process may not write to (EACCES):
        nothing raises, one report.  Root may write anywhere, so as root
        this runs as C{nobody} in a child.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        directory.chmod(0o555)
        self.addCleanup(directory.chmod, 0o700)
        script = (
            "import sys\n"
            "from ccrouter.logs import LogFileSink\n"
            "reports = []\n"
            "sink = LogFileSink(sys.argv[1], report=reports.append,"
            " clock=lambda: 0.0)\n"
            "for _ in range(20): sink.write(b'{}\\n')\n"
            "print(sink.problems.dropped, len(reports), reports[0])\n"
        )
        command = [sys.executable, "-c", script, str(directory / "ccrouter.log")]
        if os.geteuid() == 0:
            for parent in [directory, *directory.parents]:
                if parent.stat().st_mode & 0o005 != 0o005:
                    parent.chmod(parent.stat().st_mode | 0o005)
            command = [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                *command,
            ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
            )
        except FileNotFoundError:
            raise self.skipTest("setpriv is not installed") from None
        self.assertEqual(result.returncode, 0, result.stderr)
        dropped, reports, report = result.stdout.split(" ", 2)
        self.assertEqual((dropped, reports), ("20", "1"))
        self.assertIn(os.strerror(errno.EACCES), report)


class BackgroundWriterTests(SynchronousTestCase):
    def test_neverBlocks(self) -> None:
        """
        F23: writing to a pipe nobody reads returns at once: past the queue
        limit lines are dropped and counted; once the pipe is read, what
        was queued comes out whole, then a note of how many were dropped.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        writer = BackgroundWriter(
            write,
            "a pipe",
            note=lambda text: b"NOTE " + text.encode() + b"\n",
            maxQueued=100_000,
        )
        line = b"x" * 999 + b"\n"
        before = LogDrops.count
        started = time.monotonic()
        for _ in range(1000):
            writer.write(line)
        # A blocking write would never return: the pipe holds 64 lines.
        self.assertLess(time.monotonic() - started, 5.0)
        dropped = LogDrops.count - before
        self.assertGreater(dropped, 700)

        received = bytearray()
        deadline = time.monotonic() + 30
        while b"NOTE" not in received and time.monotonic() < deadline:
            received.extend(os.read(read, 1 << 16))
        self.assertIn(
            b"NOTE %d log lines were dropped: the output was not being read\n"
            % dropped,
            received,
        )
        self.assertEqual(received.count(line), 1000 - dropped)
        self.assertTrue(writer.flush(10))

    def test_oneExitWait(self) -> None:
        """
        F23: an exiting process whose standard output and error are both
        unread pipes waits for them once, within one shared budget, not once
        per writer and again at exit.
        """
        self.patch(logs, "EXIT_DRAIN_SECONDS", 0.5)
        self.patch(logs._ExitBudget, "deadline", None)
        writers = []
        for _ in range(2):
            read, write = os.pipe()
            self.addCleanup(os.close, read)
            self.addCleanup(os.close, write)
            writer = BackgroundWriter(write, "a pipe", maxQueued=1 << 20)
            for _ in range(200):
                writer.write(b"x" * 1000 + b"\n")
            writers.append(writer)
        started = time.monotonic()
        for writer in writers:
            writer.settle()
        for writer in writers:
            writer._flushAtExit()
        elapsed = time.monotonic() - started
        # Four waits of the whole budget would take 2 s.
        self.assertLess(elapsed, 1.0)
        self.assertFalse(writers[0].flush(0))

    def test_brokenPipe(self) -> None:
        """
        F24: a standard output whose reader has gone (EPIPE): the failure is
        reported once and nothing raises.
        """
        read, write = os.pipe()
        os.close(read)
        self.addCleanup(os.close, write)
        reports: list[str] = []
        writer = BackgroundWriter(write, "standard output", report=reports.append)
        for _ in range(10):
            writer.write(b"line\n")
        self.assertTrue(writer.flush(10))
        self.assertEqual(writer.problems.dropped, 10)
        self.assertEqual(len(reports), 1)
        self.assertIn("cannot write standard output", reports[0])


class SafeObserverTests(SynchronousTestCase):
    def test_formatFailureDoesNotRaise(self) -> None:
        """
        F24: an event that cannot be formatted becomes a line saying so.
        """
        written: list[bytes] = []

        def broken(event: Any) -> str:
            raise RuntimeError("no")

        SafeObserver(broken, written.append)({"log_namespace": "somewhere"})
        self.assertEqual(
            written, [b"(ccrouter could not format a log event from somewhere)\n"]
        )

    def test_fileObserverOnFullDisk(self) -> None:
        """
        F24: the daemon's observer on C{/dev/full} takes events without
        raising.
        """
        reports: list[str] = []
        observer = fileObserver("/dev/full", report=reports.append)
        for _ in range(10):
            observer({"log_format": "hello", "log_time": time.time()})
        self.assertEqual(len(reports), 1)

    def test_problemsReportedOncePerEpisode(self) -> None:
        """
        F24: a failure is reported once; again only after a success.
        """
        reports: list[str] = []
        problems = WriteProblems("x", reports.append)
        for _ in range(3):
            problems.failed(OSError(errno.EIO, os.strerror(errno.EIO)))
        self.assertEqual(problems.succeeded(), 3)
        self.assertEqual(problems.succeeded(), 0)
        problems.failed(OSError(errno.EIO, os.strerror(errno.EIO)))
        self.assertEqual(len(reports), 3)


class ReadableRecordTests(SynchronousTestCase):
    def test_requestRecordReadsAsJSON(self) -> None:
        """
        A request log event written to the JSON log reads back, in
        C{ccrouter logs}, as one line ending in the record as JSON (not as
        a Python dict), with control characters escaped.
        """
        record = JSONFields(request_id="ccr_1", client_model="m\x1b[31m\u2028x", n=1)
        event = {
            "log_format": "{request}",
            "log_namespace": "ccrouter.requests",
            "log_level": LogLevel.info,
            "log_time": 0.0,
            "log_system": "-",
            "request": record,
            "request_id": "ccr_1",
        }
        line = formatLine(eventAsJSON(event))
        assert line is not None
        self.assertNotIn("\n", line)
        self.assertNotIn("\x1b", line)
        self.assertNotIn("\u2028", line)
        self.assertEqual(json.loads(line.split("] ", 1)[1]), dict(record))


class TextFormatTests(SynchronousTestCase):
    def test_sameAsTwisted(self) -> None:
        """
        The text log's lines are Twisted's classic text lines, whether an
        event takes the direct way for one-field formats (the request log's)
        or Twisted's general formatter; and a time stamp shows the second
        Twisted shows, wherever in the second the event falls.
        """

        class Shouty:
            def __format__(self, spec: str) -> str:
                raise ValueError("no")

        record = JSONFields(request_id="ccr_1", path="/v1/messages", n=1)
        base: dict[str, Any] = {
            "log_format": "{request}",
            "log_namespace": "ccrouter.requests",
            "log_level": LogLevel.info,
            "log_time": 1_700_000_000.25,
            "request": record,
        }
        events: list[dict[str, Any]] = [
            base,
            {**base, "log_time": 1_700_000_000.9999997},
            {**base, "log_time": None},
            {**base, "request": "two\nlines"},
            {**base, "request": ""},
            {**base, "request": 12.5},
            {**base, "request": Shouty()},
            {**base, "log_format": "{missing}"},
            {**base, "log_format": "{request!r}"},
            {**base, "log_format": "{request} and more"},
            {**base, "log_system": "a system"},
            {**base, "log_level": None},
            {k: v for k, v in base.items() if k != "log_namespace"},
            {**base, "log_failure": Failure(ValueError("x"))},
            {"log_format": "plain", "log_time": 1_700_000_000.0},
        ]
        for event in events:
            self.assertEqual(
                logs._formatText(event),
                formatEventAsClassicLogText(
                    event, formatTime=lambda when: formatTime(when, timeFormatRFC3339)
                ),
                event,
            )
        self.assertIsNotNone(logs._formatOneField(base))
