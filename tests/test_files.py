"""
Tests for L{ccrouter.files}.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.files import replaceFile


class ReplaceFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()

    def test_newFile(self) -> None:
        path = self.directory / "sub" / "mode"
        replaceFile(str(path), b"auto\n", mode=0o644)
        self.assertEqual(path.read_bytes(), b"auto\n")
        self.assertEqual(path.stat().st_mode & 0o777, 0o644)
        self.assertEqual(os.listdir(path.parent), ["mode"])

    def test_replacesWithANewInode(self) -> None:
        """
        The old file is never rewritten in place: a reader holding it open
        still reads the old content whole.
        """
        path = self.directory / "config.yaml"
        replaceFile(str(path), b"old\n")
        with path.open("rb") as reader:
            replaceFile(str(path), b"new content\n")
            self.assertEqual(reader.read(), b"old\n")
        self.assertEqual(path.read_bytes(), b"new content\n")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)

    def test_keepExistingMode(self) -> None:
        path = self.directory / "settings.json"
        replaceFile(str(path), b"{}", mode=0o640)
        replaceFile(str(path), b"{ }", mode=0o600, keepExistingMode=True)
        self.assertEqual(path.stat().st_mode & 0o777, 0o640)

    def test_failureLeavesNoTrace(self) -> None:
        self.directory.mkdir(parents=True)
        blocker = self.directory / "file"
        blocker.write_text("x")
        with self.assertRaises(OSError):
            replaceFile(str(blocker / "inside"), b"data")
        self.assertEqual(os.listdir(self.directory), ["file"])
