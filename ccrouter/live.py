# -*- test-case-name: tests.test_live -*-
"""
What a running ccrouter currently goes by: the last good config, the mode,
the breakers of the failover targets; and how it got there, for C{/health}.

The file watcher feeds it, requests read it once when they start and report
back how their attempts went.  No file or network I/O here, except saving
breaker state through the injected saver.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable

from attrs import frozen
from twisted.logger import Logger

from ccrouter.breaker import (
    Breaker,
    BreakerBoard,
    CooldownSource,
    Outcome,
    Ticket,
    Transition,
)
from ccrouter.config import Config, Mode
from ccrouter.drain import InFlight
from ccrouter.modes import ModeReading, readModeFile
from ccrouter.stats import Stats

#: Saved breaker state lives next to the mode file, under this name.
BREAKER_STATE_NAME = "breakers.json"

Clock = Callable[[], float]


class ModeSource(enum.Enum):
    FILE = "file"
    DEFAULT = "default"


@frozen
class Reload:
    """
    One attempt to reload the config.

    @ivar at: Wall-clock time.
    @ivar error: Why the new config was refused, or L{None} if it was loaded.
    """

    at: float
    error: str | None


class LiveState:
    """
    @ivar config: The config in force: the last one that loaded.
    @ivar modeName: The mode new requests are planned in.
    """

    _log = Logger()

    def __init__(
        self,
        config: Config,
        now: Clock,
        wallNow: Clock,
        configPath: str | None = None,
        saveBreakers: Callable[[str, BreakerBoard], None] | None = None,
    ) -> None:
        self.config = config
        self.configPath = configPath
        self.now = now
        self.wallNow = wallNow
        self.startedAt = wallNow()
        self._startedMonotonic = now()
        self.loadedAt = self.startedAt
        self.lastReload: Reload | None = None
        self.modeName = config.defaultMode
        self.modeSource = ModeSource.DEFAULT
        self.modeProblem: str | None = None
        self._modeContent: bytes | None = None
        self._modeUnreadable: str | None = None
        self._saveBreakers = saveBreakers
        #: Requests that moved on to another target after a failure.
        self.failovers = 0
        #: Upstreams (by base URL) that answered C{count_tokens} with 404:
        #: their token counts are estimated here until the next reload.
        self.noTokenCounting: set[bytes] = set()
        #: The endpoints listened on, when they differ from the config's.
        self.listening: tuple[str, ...] = ()
        #: The requests in flight to upstreams (the stream cap counts them,
        #: a graceful stop waits for them).
        self.inflight = InFlight()
        self.board = BreakerBoard(config.breaker)
        self.board.reconcile(config.targetNames, config.breaker, self.now())
        #: What the proxied requests came to: metrics and the status page.
        self.stats = Stats(self)

    @property
    def uptime(self) -> float:
        return self.now() - self._startedMonotonic

    @property
    def mode(self) -> Mode:
        mode = self.config.mode(self.modeName)
        assert mode is not None, "the mode is always one of the config's"
        return mode

    @property
    def modeFile(self) -> str | None:
        return self.config.modeFile

    @property
    def breakerStateFile(self) -> str | None:
        if self.config.modeFile is None:
            return None
        return os.path.join(os.path.dirname(self.config.modeFile), BREAKER_STATE_NAME)

    # Config

    def applyConfig(self, config: Config, chooseMode: bool = True) -> None:
        """
        Put a newly loaded config in force for every request that starts
        from now on.

        @param chooseMode: Whether to check the mode file's last content
            against it now; not when the config names a different mode file,
            which the caller reads and applies next.
        """
        previous = self.config
        self.config = config
        self.loadedAt = self.wallNow()
        self.lastReload = Reload(self.loadedAt, None)
        self.board.reconcile(config.targetNames, config.breaker, self.now())
        self.noTokenCounting.clear()
        self._log.info(
            "config reloaded from {path}: {modes} mode(s), {targets} failover"
            " target(s)",
            path=config.source,
            modes=len(config.modes),
            targets=len(config.targetNames),
        )
        if config.server.listen != previous.server.listen:
            self._log.warn(
                "server.listen changed in {path}; restart ccrouter to listen"
                " there (still listening as before)",
                path=config.source,
            )
        if chooseMode:
            self._chooseMode()

    def configRefused(self, problem: str) -> None:
        """
        A changed config could not be loaded: the one in force stays.
        """
        repeated = self.lastReload is not None and self.lastReload.error == problem
        self.lastReload = Reload(self.wallNow(), problem)
        if not repeated:
            self._log.error(
                "config not reloaded, the previous one stays in force: {problem}",
                problem=problem,
            )

    # Mode

    def applyModeFile(
        self, content: bytes | None, unreadable: str | None = None
    ) -> None:
        """
        The mode file changed (or is first read).

        @param content: Its bytes, or L{None} if it does not exist.
        @param unreadable: Why it exists but cannot be read, if so.
        """
        self._modeContent = content
        self._modeUnreadable = unreadable
        self._chooseMode()

    def _chooseMode(self) -> None:
        if self._modeUnreadable is not None:
            reading = ModeReading(None, f"cannot be read: {self._modeUnreadable}")
        else:
            reading = readModeFile(self._modeContent, self.config)
        problem = reading.problem
        if reading.mode is not None:
            mode, source = reading.mode, ModeSource.FILE
        elif problem is None:
            mode, source = self.config.defaultMode, ModeSource.DEFAULT
        elif self.config.mode(self.modeName) is not None:
            mode, source = self.modeName, self.modeSource
        else:
            mode, source = self.config.defaultMode, ModeSource.DEFAULT
        if problem is not None and problem != self.modeProblem:
            self._log.warn(
                "mode file {path} {problem}; staying in mode {mode}",
                path=self.modeFile,
                problem=problem,
                mode=mode,
            )
        self.modeProblem = problem
        if mode != self.modeName:
            self._log.info(
                "mode is now {mode} (was {previous}; from the {source})",
                mode=mode,
                previous=self.modeName,
                source="mode file" if source is ModeSource.FILE else "default",
            )
        self.modeName = mode
        self.modeSource = source

    # Breakers

    def breaker(self, target: str | None) -> Breaker | None:
        return self.board.get(target)

    def begin(self, target: str | None) -> Ticket | None:
        """
        An attempt on C{target} starts.  Returns what to give back to
        L{record} with its outcome (L{None} for a target without a breaker).
        """
        breaker = self.board.get(target)
        if breaker is None:
            return None
        ticket = breaker.begin(self.now())
        if ticket.probe:
            self._log.info(
                "cooldown of {target} is over: probing it with one request",
                target=target,
            )
        return ticket

    def record(
        self, target: str | None, outcome: Outcome, ticket: Ticket | None
    ) -> None:
        breaker = self.board.get(target)
        if breaker is None:
            return
        transition = breaker.record(outcome, self.now(), ticket)
        if transition is None:
            return
        self._logTransition(target, transition)
        self.saveBreakers()

    def _logTransition(self, target: str | None, transition: Transition) -> None:
        if not transition.opened:
            self._log.info(
                "{target} is healthy again ({reason}): breaker closed",
                target=target,
                reason=transition.reason,
            )
            return
        why = (
            "until its rate limit resets"
            if transition.source is CooldownSource.RATE_LIMIT
            else "on the cooldown schedule"
        )
        self._log.warn(
            "{target} taken out of rotation for {minutes:.1f} min {why}"
            " (last failure: {reason})",
            target=target,
            minutes=transition.cooldown / 60,
            why=why,
            reason=transition.reason,
        )

    def saveBreakers(self) -> None:
        path = self.breakerStateFile
        if path is None or self._saveBreakers is None:
            return
        try:
            self._saveBreakers(path, self.board)
        except OSError as e:
            self._log.warn(
                "cannot save breaker state to {path}: {problem}",
                path=path,
                problem=e.strerror or str(e),
            )
