# -*- test-case-name: tests.test_daemon -*-
"""
The daemon's log: twisted.logger events as JSON lines in a file that is
rotated by size, with a cap on the files kept, so a daemon that runs for
months cannot fill the disk.  C{twistd --logger=ccrouter.logs.daemonObserver}
installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any, cast

from twisted.logger import (
    ILogObserver,
    eventFromJSON,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
)
from twisted.python.logfile import LogFile

from ccrouter.paths import resolvePaths

#: Set by C{ccrouter start}: where the daemon logs.
LOG_FILE_VARIABLE = "CCROUTER_LOG_FILE"
ROTATE_BYTES = 10 * 1024 * 1024
KEPT_FILES = 5


def daemonObserver() -> ILogObserver:
    """
    A zero-argument factory, as twistd's C{--logger} wants.
    """
    path = os.environ.get(LOG_FILE_VARIABLE) or resolvePaths(os.environ).logFile
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    logFile = LogFile(
        name,
        directory,
        rotateLength=ROTATE_BYTES,
        maxRotatedFiles=KEPT_FILES,
        defaultMode=0o600,
    )
    # LogFile is file-like enough (write and flush), though not an IO.
    return jsonFileLogObserver(cast(IO[Any], logFile), recordSeparator="")


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
