# -*- test-case-name: tests.test_logging_faults,tests.test_secrets,tests.test_daemon -*-
"""
Where ccrouter's log goes, and what may reach it.

Every line is made safe first: control characters in logged values are
escaped (a client's C{model} or header cannot forge a line or drive a
terminal), each value is cut to L{FIELD_LIMIT} characters, and anything that
looks like a key or token (known prefixes, C{key=} in a URL, and the values
the config holds) is redacted.

Writing a line never raises and never blocks serving:

  - The daemon's log (C{twistd --logger=ccrouter.logs.daemonObserver}) is a
    file of JSON lines, rotated by size with a cap on the files kept.  A
    write that fails (disk full, I/O error, a directory made read-only)
    drops the line and counts it; the problem is said once on standard
    error, and again only if writing recovered and then failed again.
  - C{twistd -n} logs to standard output.  When that is a pipe nobody reads
    (a paused terminal, a stuck journald), a plain write would stop the
    reactor, so lines go through a bounded queue that a thread writes out;
    when the queue is full, lines are dropped and counted, and a note says
    how many once the output moves again.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorCore
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    eventFromJSON,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.components import Componentized
from twisted.web.http import Request
from zope.interface import implementer

from ccrouter.files import makePrivateDirectories
from ccrouter.paths import resolvePaths

#: Set by C{ccrouter start}: where the daemon logs.
LOG_FILE_VARIABLE = "CCROUTER_LOG_FILE"
ROTATE_BYTES = 10 * 1024 * 1024
KEPT_FILES = 5
#: The longest a logged value (a field of an event) may be, in characters.
FIELD_LIMIT = 256
#: How long a log file that cannot be written is left alone before the
#: next attempt to open it again.
RETRY_SECONDS = 1.0
#: What may wait for a slow standard output before lines are dropped.
MAX_QUEUED_BYTES = 1024 * 1024
#: How long the standard output's writer lets lines gather before writing
#: them out together.
GATHER_SECONDS = 0.005
#: How long an exiting process waits for its queued lines to be written,
#: in all (standard output and standard error share it).
EXIT_DRAIN_SECONDS = 2.0

_LOG_FILE_MODE = 0o600

# Keys and tokens by their shape: Anthropic keys and OAuth tokens (sk-ant-),
# OpenAI-style keys (sk-, sk-proj-), Google API keys (AIza), bearer
# credentials, and credentials in a URL's query.
_SECRET_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(?P<prefix>sk-ant-|sk-|AIza)[A-Za-z0-9_-]{8,}"
    r"|(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(?P<query>[?&;](?:[a-z_-]*(?:key|token|secret|password|signature|sig|auth))=)"
    r"[^&;#\s\"'\\]+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


_NO_SECRETS: frozenset[str] = frozenset()


def _noSecrets() -> frozenset[str]:
    return _NO_SECRETS


class _Secrets:
    #: Where the secret values to redact come from (one per process).
    source: Callable[[], frozenset[str]] = _noSecrets


def setSecretSource(source: Callable[[], frozenset[str]] | None) -> None:
    """
    Say where the secret values that must never be logged come from (the
    live config's keys and token, as L{ccrouter.hardening.configSecrets}
    finds them), so a reload that changes a key is covered at once.
    """
    _Secrets.source = source or _noSecrets


def _shapeRedacted(match: re.Match[str]) -> str:
    kept = match.group("prefix") or match.group("bearer") or match.group("query")
    return kept + REDACTED


#: What a text must contain, lower-cased, for L{_SECRET_SHAPES} to match in
#: it: one of the prefixes, or a query separator, a C{=} and one of the
#: names (C{signature} contains C{sig}).
_SHAPE_PREFIXES = ("sk-", "aiza", "bearer")
_QUERY_SEPARATORS = ("?", "&", ";")
_QUERY_NAMES = ("key", "token", "secret", "password", "sig", "auth")


def _mayHoldShape(text: str) -> bool:
    """
    Whether L{_SECRET_SHAPES} could match in C{text}; C{False} only when it
    certainly cannot.  The regular expression tries each of its branches at
    every character, which costs tens of microseconds on a log line; these
    substring tests cost a fraction of that.  They are exact for ASCII text
    only: under C{IGNORECASE}, C{re} also lets a few non-ASCII letters
    (dotless i, long s) stand for ASCII ones, so other text always gets the
    regular expression.
    """
    if not text.isascii():
        return True
    lowered = text.lower()
    if any(prefix in lowered for prefix in _SHAPE_PREFIXES):
        return True
    return (
        "=" in text
        and any(separator in text for separator in _QUERY_SEPARATORS)
        and any(name in lowered for name in _QUERY_NAMES)
    )


def redact(text: str) -> str:
    """
    C{text} with every known secret value, and everything shaped like a
    key or token, replaced by L{REDACTED}.
    """
    try:
        secrets = _Secrets.source()
    except Exception:  # noqa: BLE001 - a log line must never fail
        # Fall back to the shapes alone.
        secrets = frozenset()
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not _mayHoldShape(text):
        return text
    return _SECRET_SHAPES.sub(_shapeRedacted, text)


#: What C{json.dumps(value, separators=(",", ":"))} does, without making a
#: new encoder for every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


class JSONFields(dict[str, Any]):
    """
    An event field holding a record: a plain dict in the JSON log, one
    compact JSON object wherever the event is formatted as text.
    """

    def __str__(self) -> str:
        # ASCII only: a log line must not carry what a terminal would act on.
        return _COMPACT_JSON.encode(self)

    def __format__(self, spec: str) -> str:
        # The JSON log keeps str() of each field for formatting it later.
        return str(self)


def _escapeCharacter(character: str) -> str:
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escapeControls(text: str) -> str:
    """
    C{text} with every character that is not printable (C0 and C1 controls
    including CR, LF and ESC, line and paragraph separators, bidirectional
    overrides, invisible format characters) written as a Python escape.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escapeCharacter(c) for c in text)


def truncate(text: str, limit: int = FIELD_LIMIT) -> str:
    """
    C{text} cut to at most C{limit} characters, saying how long it was.
    """
    if len(text) <= limit:
        return text
    suffix = f"... ({len(text)} characters)"
    return text[: max(0, limit - len(suffix))] + suffix


#: Values up to this long are remembered by L{loggable}.
_MEMO_LENGTH = 256
#: How many it remembers before it starts over.
_MEMO_SIZE = 1024


class _LoggableMemo:
    """
    What L{loggable} made of short values, for the secrets it redacted:
    the same model names and paths come back on every request, and the
    answer depends only on the value, the limit and the secrets.
    """

    secrets: frozenset[str] | None = None
    results: dict[tuple[str, int], str] = {}


def loggable(value: str, limit: int = FIELD_LIMIT) -> str:
    """
    A value from outside (a model name, a header, a path) as it may appear
    in a log line: secrets redacted, control characters escaped, at most
    C{limit} characters.
    """
    if len(value) > _MEMO_LENGTH:
        return truncate(escapeControls(redact(value)), limit)
    try:
        secrets = _Secrets.source()
    except Exception:  # noqa: BLE001 - redact falls back, and says nothing
        return truncate(escapeControls(redact(value)), limit)
    memo = _LoggableMemo
    if secrets is not memo.secrets:
        # A reload changed the secrets: nothing remembered holds.
        memo.secrets, memo.results = secrets, {}
    key = (value, limit)
    result = memo.results.get(key)
    if result is None:
        result = truncate(escapeControls(redact(value)), limit)
        if len(memo.results) >= _MEMO_SIZE:
            memo.results.clear()
        memo.results[key] = result
    return result


def sanitizeEvent(event: LogEvent) -> LogEvent:
    """
    A copy of C{event} whose text fields are L{loggable}.  The C{log_*}
    keys, which are twisted.logger's own (the format, a failure), are left
    for the final text to be redacted as a whole.
    """
    safe = dict(event)
    for key, value in event.items():
        if key.startswith("log_"):
            continue
        if isinstance(value, str):
            safe[key] = loggable(value)
        elif isinstance(value, bytes):
            safe[key] = loggable(value.decode("utf-8", "backslashreplace"))
    return safe


class _SecondStamps:
    """
    C{formatTime(when, timeFormatRFC3339)}, which shows whole seconds, worked
    out once per second rather than once per line (finding the local UTC
    offset and formatting a date cost more than the rest of a line).
    """

    def __init__(self) -> None:
        self._second: int | None = None
        self._stamp = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return formatTime(when, timeFormatRFC3339)
        second = math.floor(when)
        if when - second > _LAST_SAFE_FRACTION:
            # datetime rounds to the microsecond, which may carry this moment
            # into the next second.
            return formatTime(when, timeFormatRFC3339)
        if second != self._second:
            self._stamp = formatTime(when, timeFormatRFC3339)
            self._second = second
        return self._stamp


#: Any moment this far into its second, or less, shows that second.
_LAST_SAFE_FRACTION = 0.999998


#: A format that is one field and nothing else, as the request log's.
_ONE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


def _formatText(event: LogEvent) -> str | None:
    return _formatOneField(event) or formatEventAsClassicLogText(
        event, formatTime=_TEXT_STAMPS
    )


def _formatOneField(event: LogEvent) -> str | None:
    """
    What L{formatEventAsClassicLogText} makes of an event whose format is a
    single field (the request log's, once per request), made directly:
    Twisted's general formatter parses the format string anew for every
    event, which cost as much as the rest of the line.  L{None} for any
    other event, or one that needs more than the plain case (a failure, a
    system, a flattened event, a field missing or failing to format).
    """
    logFormat = event.get("log_format")
    if (
        not isinstance(logFormat, str)
        or "log_failure" in event
        or "log_system" in event
        or "log_flattened" in event
    ):
        return None
    match = _ONE_FIELD.match(logFormat)
    if match is None or match.group(1) not in event:
        return None
    try:
        text = format(event[match.group(1)], "")
    except Exception:  # noqa: BLE001 - the general formatter says why
        return None
    if not text:
        return None
    level = event.get("log_level")
    system = "{}#{}".format(
        event.get("log_namespace", "-"), "-" if level is None else level.name
    )
    line = f"{_TEXT_STAMPS(event.get('log_time'))} [{system}] {text}"
    return line.replace("\n", "\n\t") + "\n"


_TEXT_STAMPS = _SecondStamps()


def _formatJSON(event: LogEvent) -> str | None:
    return eventAsJSON(event) + "\n"


def _noteEvent(text: str) -> LogEvent:
    return {
        "log_format": "{note}",
        "note": text,
        "log_level": LogLevel.warn,
        "log_namespace": __name__,
        "log_system": "-",
        "log_time": time.time(),
    }


class LogDrops:
    """
    How many log lines were lost, in this process, because they could not
    be written (or waited too long to be); C{log_write_errors}.
    """

    count = 0
    _lock = threading.Lock()

    @classmethod
    def add(cls, number: int = 1) -> None:
        with cls._lock:
            cls.count += number


def logWriteErrors() -> int:
    """
    How many log lines this process has dropped so far.
    """
    return LogDrops.count


class WriteProblems:
    """
    Says that writing somewhere fails once, not once per line: again only
    after a write succeeded in between.

    @ivar failing: Whether the last write failed.
    @ivar dropped: Lines dropped since writing last worked.
    """

    def __init__(self, what: str, report: Callable[[str], None]) -> None:
        self._what = what
        self._report = report
        self.failing = False
        self.dropped = 0

    def failed(self, error: OSError) -> None:
        """
        A line could not be written because of C{error}, and is dropped.
        """
        self.dropLine()
        if self.failing:
            return
        self.failing = True
        reason = error.strerror or str(error)
        self._report(
            f"ccrouter: cannot write {self._what}: {reason}; log lines are"
            " dropped (and counted) until it works again, serving goes on"
        )

    def dropLine(self) -> None:
        self.dropped += 1
        LogDrops.add()

    def succeeded(self) -> int:
        """
        A line was written.

        @return: How many were dropped before it, if writing failed before
            (0 otherwise).
        """
        if not self.failing:
            return 0
        self.failing = False
        dropped, self.dropped = self.dropped, 0
        self._report(
            f"ccrouter: writing {self._what} works again;"
            f" {dropped} log lines were dropped"
        )
        return dropped


class _ExitBudget:
    """
    The one wait for the last log lines of an exiting process, shared by
    every writer and every exit hook: it starts with the first of them.
    """

    deadline: float | None = None

    @classmethod
    def remaining(cls) -> float:
        if cls.deadline is None:
            cls.deadline = time.monotonic() + EXIT_DRAIN_SECONDS
        return cls.deadline - time.monotonic()


class BackgroundWriter:
    """
    Writes to a file descriptor from a thread of its own, so the caller
    never waits for it: at most C{maxQueued} bytes wait, and lines beyond
    that are dropped and counted.  Once the queue has emptied again, a note
    (from C{note}) says how many.

    @ivar problems: What happened to writes that failed.
    """

    def __init__(
        self,
        fd: int,
        what: str,
        report: Callable[[str], None] | None = None,
        note: Callable[[str], bytes] | None = None,
        maxQueued: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._fd = fd
        self._note = note
        self._maxQueued = maxQueued
        self.problems = WriteProblems(what, report or (lambda text: None))
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._overflowed = 0
        self._condition = threading.Condition()
        self._owner: int | None = None
        self._settleBy: float | None = None
        #: Whether the writing thread waits for a line (and must be woken).
        self._idle = True

    def write(self, data: bytes) -> None:
        """
        Queue C{data}, or drop it if too much is waiting already.
        """
        with self._condition:
            if self._queued + len(data) > self._maxQueued:
                self._overflowed += 1
                LogDrops.add()
                return
            self._queue.append(data)
            self._queued += len(data)
            self._ensureThread()
            if self._idle:
                self._condition.notify_all()
        if self._settleBy is not None:
            self.flush(self._settleBy - time.monotonic())

    def settle(self) -> None:
        """
        From now on, wait for each line to be written, within the process's
        exit budget (L{EXIT_DRAIN_SECONDS} in all): for the last lines of a
        process that is about to end (twistd ends by re-raising SIGTERM,
        which skips C{atexit}).
        """
        remaining = _ExitBudget.remaining()
        self._settleBy = time.monotonic() + remaining
        self.flush(remaining)

    def _flushAtExit(self) -> None:
        self.flush(_ExitBudget.remaining())

    def _ensureThread(self) -> None:
        # After a fork the thread is gone; start another in the child.
        if self._owner == os.getpid():
            return
        self._owner = os.getpid()
        threading.Thread(
            target=self._run, name=f"ccrouter log writer (fd {self._fd})", daemon=True
        ).start()
        atexit.register(self._flushAtExit)

    def flush(self, timeout: float) -> bool:
        """
        Wait at most C{timeout} seconds for what is queued to be written.

        @return: Whether it was.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._queued:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue:
                    self._idle = True
                    self._condition.wait()
                self._idle = False
            # The lines of a busy moment are let gather and go out in one
            # write: waking this thread and making a system call for every
            # line cost the serving thread more than formatting the line.
            time.sleep(GATHER_SECONDS)
            with self._condition:
                lines = list(self._queue)
            self._writeOut(lines)
            with self._condition:
                for line in lines:
                    self._queue.popleft()
                    self._queued -= len(line)
                if not self._queue and self._overflowed and self._note is not None:
                    note = self._note(
                        f"{self._overflowed} log lines were dropped: the output"
                        " was not being read"
                    )
                    self._overflowed = 0
                    self._queue.append(note)
                    self._queued += len(note)
                self._condition.notify_all()

    def _writeOut(self, lines: list[bytes]) -> None:
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    # Someone made the descriptor non-blocking: wait for room.
                    select.select([], [self._fd], [], 1.0)
                    continue
                view = view[written:]
        except OSError as e:
            # Lost: the line the failure cut, and every line after it.
            unsent = len(view)
            lost = 0
            for line in reversed(lines):
                if unsent <= 0:
                    break
                unsent -= len(line)
                lost += 1
            self.problems.failed(e)
            for _ in range(lost - 1):
                self.problems.dropLine()
            return
        self.problems.succeeded()


class _Stderr:
    lock = threading.Lock()
    writer: BackgroundWriter | None = None


def reportOnStderr(text: str) -> None:
    """
    Say C{text} on the process's real standard error (twistd points
    C{sys.stderr} at the log, which may be what fails), without waiting for
    it to be read.
    """
    with _Stderr.lock:
        if _Stderr.writer is None:
            _Stderr.writer = BackgroundWriter(2, "standard error")
        writer = _Stderr.writer
    writer.write(text.encode("utf-8", "backslashreplace") + b"\n")


class LogFileSink:
    """
    A log file that is written line by line with C{os.write}, rotated by
    size (C{NAME.1} is the newest old file, at most C{keep} of them), and
    created 0600 in a 0700 directory.  L{write} never raises: a line that
    cannot be written is dropped and counted, the file is closed, and
    opening it again is tried once C{retryInterval} has passed, so writing
    resumes by itself when space returns.
    """

    def __init__(
        self,
        path: str,
        rotateBytes: int = ROTATE_BYTES,
        keep: int = KEPT_FILES,
        report: Callable[[str], None] | None = None,
        note: Callable[[str], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retryInterval: float = RETRY_SECONDS,
    ) -> None:
        self.path = os.path.abspath(path)
        self._rotateBytes = rotateBytes
        self._keep = keep
        self._note = note
        self._clock = clock
        self._retryInterval = retryInterval
        self.problems = WriteProblems(f"the log {self.path}", report or reportOnStderr)
        self._rotation = WriteProblems(
            f"the log {self.path} (rotating it)", report or reportOnStderr
        )
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._regular = False
        self._size = 0
        self._nextOpen = 0.0
        self._nextRotation = 0.0
        self._brokenLine = False

    def write(self, data: bytes) -> None:
        with self._lock:
            try:
                self._write(data)
            except Exception:  # noqa: BLE001 - logging must never raise
                # Whatever happens here, the line is lost and serving goes on.
                self._close()
                self.problems.dropLine()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _write(self, data: bytes) -> None:
        now = self._clock()
        if self._fd is None:
            if now < self._nextOpen:
                self.problems.dropLine()
                return
            try:
                self._open()
            except OSError as e:
                self._nextOpen = now + self._retryInterval
                self.problems.failed(e)
                return
        if (
            self._regular
            and self._size
            and self._size + len(data) > self._rotateBytes
            and now >= self._nextRotation
        ):
            try:
                self._rotate()
            except OSError as e:
                # Keep writing to the file there is; try again later.
                self._nextRotation = now + self._retryInterval
                self._rotation.failed(e)
            else:
                self._rotation.succeeded()
            if self._fd is None:
                self._nextOpen = now + self._retryInterval
                self.problems.dropLine()
                return
        if not self._put(data, now):
            return
        dropped = self.problems.succeeded()
        if dropped and self._note is not None:
            self._put(
                self._note(
                    f"{dropped} log lines were dropped: {self.path} could not be"
                    " written"
                ),
                now,
            )

    def _put(self, data: bytes, now: float) -> bool:
        assert self._fd is not None
        # A line cut short by an earlier failure is ended first, so the
        # next one is whole.
        payload = b"\n" + data if self._brokenLine else data
        written = 0
        try:
            while written < len(payload):
                written += os.write(self._fd, payload[written:])
        except OSError as e:
            if written:
                self._brokenLine = not payload[:written].endswith(b"\n")
            self._size += written
            self._close()
            self._nextOpen = now + self._retryInterval
            self.problems.failed(e)
            return False
        self._brokenLine = False
        self._size += written
        return True

    def _open(self) -> None:
        makePrivateDirectories(os.path.dirname(self.path))
        fd = os.open(
            self.path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            _LOG_FILE_MODE,
        )
        try:
            status = os.fstat(fd)
            self._regular = stat.S_ISREG(status.st_mode)
            loose = status.st_mode & 0o077
            if self._regular and loose and status.st_uid == os.geteuid():
                # A log from an older version, or made by hand.
                os.fchmod(fd, _LOG_FILE_MODE)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._size = status.st_size if self._regular else 0

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _rotate(self) -> None:
        """
        C{NAME.(n-1)} becomes C{NAME.n} and so on, C{NAME} becomes C{NAME.1},
        and a new C{NAME} is opened.  Only a regular file is ever renamed.
        """
        for number in range(self._keep, 0, -1):
            older = f"{self.path}.{number}"
            newer = f"{self.path}.{number - 1}" if number > 1 else self.path
            if number == self._keep and os.path.lexists(older):
                os.unlink(older)
            if os.path.lexists(newer):
                os.rename(newer, older)
        self._close()
        self._open()


@implementer(ILogObserver)
class SafeObserver:
    """
    Formats each event made safe (L{sanitizeEvent}, then L{redact} over the
    whole text) and hands the bytes to C{sink}, which must not raise.
    """

    def __init__(
        self,
        format: Callable[[LogEvent], str | None],
        sink: Callable[[bytes], None],
    ) -> None:
        self._format = format
        self._sink = sink

    def __call__(self, event: LogEvent) -> None:
        try:
            text = self._format(sanitizeEvent(event))
        except Exception:  # noqa: BLE001 - logging must never raise
            namespace = event.get("log_namespace")
            text = f"(ccrouter could not format a log event from {namespace})\n"
        if not text:
            return
        self._sink(redact(text).encode("utf-8", "backslashreplace"))


def _noteFormatter(format: Callable[[LogEvent], str | None]) -> Callable[[str], bytes]:
    return lambda text: (format(_noteEvent(text)) or "").encode("utf-8")


def fileObserver(
    path: str,
    report: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rotateBytes: int = ROTATE_BYTES,
) -> SafeObserver:
    """
    The daemon's JSON-lines log observer, writing to C{path}.
    """
    sink = LogFileSink(
        path,
        rotateBytes=rotateBytes,
        report=report,
        note=_noteFormatter(_formatJSON),
        clock=clock,
    )
    return SafeObserver(_formatJSON, sink.write)


def daemonObserver() -> ILogObserver:
    """
    A zero-argument factory, as twistd's C{--logger} wants: the log file
    C{ccrouter start} names in C{CCROUTER_LOG_FILE}, or the state
    directory's C{ccrouter.log}.
    """
    path = os.environ.get(LOG_FILE_VARIABLE) or resolvePaths(os.environ).logFile
    return fileObserver(path)


def streamObserver(
    fd: int,
    reactor: IReactorCore | None = None,
    what: str = "standard output",
    report: Callable[[str], None] | None = None,
    maxQueued: int = MAX_QUEUED_BYTES,
) -> SafeObserver:
    """
    A text log observer like twistd's own for standard output, whose
    writes never block: see L{BackgroundWriter}.  Once C{reactor} has shut
    down, it waits (a little) for the last lines to be written.
    """
    writer = BackgroundWriter(
        fd,
        what,
        report=report or reportOnStderr,
        note=_noteFormatter(_formatText),
        maxQueued=maxQueued,
    )
    if reactor is not None:
        reactor.addSystemEventTrigger("after", "shutdown", writer.settle)
    return SafeObserver(_formatText, writer.write)


def stdoutObserverFor(
    options: Mapping[str, Any], reactor: IReactorCore
) -> ILogObserver | None:
    """
    The observer for C{twistd -n} to log to standard output with, when the
    twistd options behind the plugin's C{options} say it would (no
    C{--logfile}, C{--logger} or C{--syslog}); L{None} otherwise, or when
    not run by twistd.
    """
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return None
    try:
        toStdout = (
            twistd["nodaemon"]
            and twistd["logfile"] in ("", "-", None)
            and not twistd["logger"]
            and not twistd["syslog"]
        )
    except KeyError:
        # Another runner (twist): it keeps its own logging.
        return None
    if not toStdout:
        return None
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return streamObserver(fd, reactor)


class _LoggingRoot(MultiService):
    """
    The root of the service tree twistd runs, holding ccrouter's own.
    Given a twistd application, it offers twistd C{observer} as the
    application's log observer (the hook twistd has for that), so that
    C{twistd -n ccrouter} logs through it instead of writing to standard
    output itself.
    """

    def __init__(self, observer: ILogObserver) -> None:
        super().__init__()
        self._observer = observer

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)


def withLogObserver(service: IService, observer: ILogObserver | None) -> IService:
    """
    C{service}, or, given an C{observer} (from L{stdoutObserverFor}), a root
    above it that makes twistd log through that observer.
    """
    if observer is None:
        return service
    root = _LoggingRoot(observer)
    service.setServiceParent(root)
    return root


def _quoted(value: str) -> str:
    return truncate(escapeControls(redact(value)).replace('"', '\\"'))


def accessLogLine(timestamp: str, request: Request) -> str:
    """
    Twisted's combined access log line, with every value that comes from the
    client made L{loggable} (and a key in the query redacted): an
    C{IAccessLogFormatter} for the site.
    """

    def text(value: bytes | str | None) -> str:
        if value is None:
            return "-"
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        return _quoted(value)

    address = request.getClientAddress()
    host = getattr(address, "host", None) or "-"
    return (
        f'"{text(host)}" - - {timestamp} "{text(request.method)}'
        f' {text(request.uri)} {text(request.clientproto)}"'
        f" {request.code} {request.sentLength or '-'}"
        f' "{text(request.getHeader(b"referer"))}"'
        f' "{text(request.getHeader(b"user-agent"))}"'
    )


def readableLines(stream: IO[str]) -> Iterator[str]:
    """
    The log's JSON lines as the classic one-line text, skipping anything
    that is not an event (a line cut short by a crash, say).
    """
    for line in stream:
        text = formatLine(line)
        if text is not None:
            yield text


def formatLine(line: str) -> str | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = eventFromJSON(line)
    except ValueError:
        return None
    text = formatEventAsClassicLogText(event)
    return None if text is None else text.rstrip("\n")
