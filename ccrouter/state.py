# -*- test-case-name: tests.test_state -*-
"""
Breaker state across restarts: a small JSON file, replaced atomically, so a
restart does not send traffic straight back to a target in cooldown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ccrouter.breaker import Breaker, BreakerBoard, BreakerPolicy
from ccrouter.files import writePrivateFile

FORMAT_VERSION = 1
#: A state file larger than this was not written by ccrouter.
MAX_STATE_BYTES = 1024 * 1024


def encodeBoard(board: BreakerBoard, now: float, wallNow: float) -> bytes:
    targets = {}
    for name in board.names():
        breaker = board.get(name)
        assert breaker is not None
        targets[name] = breaker.export(now)
    document = {"version": FORMAT_VERSION, "saved_at": wallNow, "targets": targets}
    return json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def decodeInto(
    content: bytes, board: BreakerBoard, now: float, wallNow: float
) -> list[str]:
    """
    Restore the saved breakers of the targets C{board} still has.

    @return: The names restored.
    @raise ValueError: If C{content} is not a state file ccrouter wrote.
    """
    try:
        document: Any = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError("not a ccrouter breaker state file (or a newer version)")
    savedAt = document.get("saved_at")
    targets = document.get("targets")
    if (
        isinstance(savedAt, bool)
        or not isinstance(savedAt, (int, float))
        or not 0 <= savedAt < 1e11
        or not isinstance(targets, dict)
    ):
        raise ValueError("not a ccrouter breaker state file")
    # A clock set back since the save must not stretch a cooldown.
    elapsed = max(0.0, wallNow - float(savedAt))
    kept = {
        name: saved
        for name, saved in targets.items()
        if board.get(name) is not None and isinstance(saved, dict)
    }
    # All or nothing: check every entry on a scratch breaker first.
    for saved in kept.values():
        Breaker(BreakerPolicy()).restore(saved, now, elapsed)
    for name, saved in kept.items():
        breaker = board.get(name)
        assert breaker is not None
        breaker.restore(saved, now, elapsed)
    return list(kept)


def saveBoard(
    path: str,
    board: BreakerBoard,
    now: Callable[[], float],
    wallNow: Callable[[], float],
) -> None:
    """
    Write the board to C{path} through a temporary file and a rename, so a
    reader (or a crash) never sees half a file; 0600, in a 0700 directory
    if it has to be created.

    @raise OSError: If it cannot be written.
    """
    writePrivateFile(path, encodeBoard(board, now(), wallNow()))


def loadBoard(path: str, board: BreakerBoard, now: float, wallNow: float) -> list[str]:
    """
    Restore what L{saveBoard} wrote; nothing when there is no file.

    @raise ValueError: If the file is unreadable or not a state file.
    """
    try:
        with open(path, "rb") as stream:
            content = stream.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    if len(content) > MAX_STATE_BYTES:
        raise ValueError("too large to be a breaker state file")
    return decodeInto(content, board, now, wallNow)
