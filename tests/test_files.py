"""
Tests for L{ccrouter.files}.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.files import makePrivateDirectories, replaceFile, writePrivateFile


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


class PrivateFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)

    def test_privateFileAndDirectories(self) -> None:
        """
        S14: under C{umask 022}, L{writePrivateFile} makes the file 0600 and
        every directory it has to create 0700, not only the last one.
        """
        path = self.directory / "a" / "b" / "token"
        writePrivateFile(str(path), b"secret\n")
        self.assertEqual(path.read_bytes(), b"secret\n")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        for directory in (path.parent, path.parent.parent, self.directory):
            self.assertEqual(directory.stat().st_mode & 0o777, 0o700, directory)

    def test_replacesALooseFile(self) -> None:
        """
        S14: a file already there, readable by others, becomes 0600.
        """
        self.directory.mkdir(parents=True)
        path = self.directory / "config.yaml"
        path.write_text("old")
        path.chmod(0o644)
        writePrivateFile(str(path), b"new")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        self.assertEqual(path.read_bytes(), b"new")

    def test_existingDirectoriesLeftAlone(self) -> None:
        """
        A directory that already exists (the user's C{~/.config}) keeps its
        mode; only the ones created are 0700.
        """
        self.directory.mkdir(parents=True)
        self.directory.chmod(0o755)
        makePrivateDirectories(str(self.directory / "ccrouter"))
        self.assertEqual(self.directory.stat().st_mode & 0o777, 0o755)
        self.assertEqual((self.directory / "ccrouter").stat().st_mode & 0o777, 0o700)
        makePrivateDirectories(str(self.directory / "ccrouter"))

    def test_fileInTheWay(self) -> None:
        self.directory.mkdir(parents=True)
        (self.directory / "file").write_text("x")
        with self.assertRaises(OSError):
            makePrivateDirectories(str(self.directory / "file" / "sub"))
