# -*- test-case-name: tests.test_watch -*-
"""
Watching the config and mode files: a L{LoopingCall} compares each file's
C{stat} (device, inode, size, modification time) with the last one applied,
and C{SIGHUP} forces a reload at once.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Callable
from types import FrameType
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccrouter.config import Config, ConfigError
from ccrouter.live import LiveState, ModeSource
from ccrouter.modes import MAX_MODE_FILE_BYTES

#: Seconds between two looks at the files.  A change is applied once it has
#: stayed the same for one interval, so a file caught half-written is not.
POLL_INTERVAL = 0.5


@frozen
class Signature:
    device: int
    inode: int
    size: int
    modified: int
    #: Changes with permissions too: a file that could not be read is read
    #: again once it can be.
    changed: int


def signature(path: str) -> Signature | None:
    """
    What identifies the file's current content, or L{None} when there is no
    file.  A save by rename changes the inode; a rewrite in place, the size
    or modification time.
    """
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return Signature(
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


_UNSEEN = object()


class SettledFile:
    """
    Tells when a file has changed since it was last applied and then stayed
    the same for a whole poll interval.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._applied: object = _UNSEEN
        self._seen: object = _UNSEEN

    def changed(self) -> bool:
        current = signature(self.path)
        if current == self._applied:
            self._seen = current
            return False
        if current == self._seen:
            self._applied = current
            return True
        self._seen = current
        return False

    def markApplied(self) -> None:
        """
        The file's content as it is now has just been read and applied.
        """
        self._applied = self._seen = signature(self.path)


def readModeBytes(path: str) -> bytes | None:
    """
    The start of the mode file (more than a mode file may hold, so that an
    oversized one can be told apart), or L{None} if there is none.

    @raise OSError: If it exists but cannot be read.
    """
    try:
        # Non-blocking, so that a FIFO put there cannot stall the reactor.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as modeFile:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return modeFile.read(MAX_MODE_FILE_BYTES + 1)


class Watcher(Service):
    """
    Keeps a L{LiveState} in step with the files.  Whatever goes wrong while
    polling is logged and the polling goes on.
    """

    _log = Logger()

    def __init__(
        self,
        live: LiveState,
        configPath: str | None,
        loadConfig: Callable[[str], Config],
        clock: IReactorTime,
        callFromThread: Callable[[Callable[[], None]], Any] | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        """
        @param callFromThread: How a signal handler gets back onto the
            reactor thread; L{None} leaves C{SIGHUP} alone.
        """
        self._live = live
        self._configPath = configPath
        self._loadConfig = loadConfig
        self._clock = clock
        self._callFromThread = callFromThread
        self._interval = interval
        self._config = None if configPath is None else SettledFile(configPath)
        self._mode: SettledFile | None = None
        self._loop: LoopingCall | None = None
        self._previousHandler: Any = None

    def startService(self) -> None:
        super().startService()
        if self._config is not None:
            # The config in force was just read from this file.
            self._config.markApplied()
        self._reloadMode()
        live = self._live
        self._log.info(
            "mode {mode} (from the {source}); watching {config} and {modeFile}",
            mode=live.modeName,
            source="mode file" if live.modeSource is ModeSource.FILE else "default",
            config=self._configPath or "no config file",
            modeFile=live.modeFile or "no mode file",
        )
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)
        if self._callFromThread is not None:
            self._previousHandler = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._callFromThread is not None:
            signal.signal(signal.SIGHUP, self._previousHandler or signal.SIG_DFL)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        assert self._callFromThread is not None
        self._callFromThread(self.reloadNow)

    def poll(self) -> None:
        try:
            if self._config is not None and self._config.changed():
                self._reloadConfig()
            if self._mode is not None and self._mode.changed():
                self._applyModeFile(self._mode.path)
        except Exception:  # noqa: BLE001 - the poller must outlive any bug
            self._log.failure("watching the config and mode files failed")

    def reloadNow(self) -> None:
        """
        Read both files now, changed or not (C{SIGHUP}).
        """
        self._log.info("reloading the config and the mode file (SIGHUP)")
        try:
            if self._config is not None:
                self._config.markApplied()
                self._reloadConfig()
            self._reloadMode()
        except Exception:  # noqa: BLE001 - a signal handler must not raise
            self._log.failure("reloading the config and mode files failed")

    def _reloadConfig(self) -> None:
        assert self._configPath is not None
        try:
            config = self._loadConfig(self._configPath)
        except ConfigError as e:
            self._live.configRefused(str(e))
            return
        current = None if self._mode is None else self._mode.path
        moved = current != config.modeFile
        self._live.applyConfig(config, chooseMode=not moved)
        if moved:
            self._reloadMode()

    def _reloadMode(self) -> None:
        path = self._live.modeFile
        if path is None:
            self._mode = None
            self._live.applyModeFile(None)
            return
        if self._mode is None or self._mode.path != path:
            self._mode = SettledFile(path)
        self._mode.markApplied()
        self._applyModeFile(path)

    def _applyModeFile(self, path: str) -> None:
        try:
            content = readModeBytes(path)
        except OSError as e:
            self._live.applyModeFile(None, unreadable=e.strerror or str(e))
            return
        self._live.applyModeFile(content)
