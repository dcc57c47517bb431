"""
Tests for L{ccrouter.watch}: the config and mode files on disk, polled on a
L{task.Clock}.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import Config
from ccrouter.live import LiveState
from ccrouter.tap import loadConfig
from ccrouter.watch import POLL_INTERVAL, SettledFile, Watcher

CONFIG = """
modes:
  claude: []
  auto: {failover: [claude]}
"""


def replace(path: Path, text: str | bytes) -> None:
    """
    Save the way editors and C{ccrouter mode} do: a new file renamed over
    the old one.
    """
    temporary = path.with_name(path.name + ".tmp")
    if isinstance(text, str):
        temporary.write_text(text)
    else:
        temporary.write_bytes(text)
    os.replace(temporary, path)


class WatcherCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.directory.mkdir()
        self.configPath = self.directory / "config.yaml"
        self.configPath.write_text(CONFIG)
        self.modePath = self.directory / "mode"
        self.clock = Clock()
        self.loads = 0
        self.live = LiveState(
            self.load(str(self.configPath)),
            now=self.clock.seconds,
            wallNow=self.clock.seconds,
            configPath=str(self.configPath),
        )
        self.loader: Callable[[str], Config] = self.load
        self.watcher = Watcher(
            self.live, str(self.configPath), lambda p: self.loader(p), self.clock
        )
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def load(self, path: str) -> Config:
        self.loads += 1
        return loadConfig(path, {})

    def poll(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.advance(POLL_INTERVAL)


class ModeFileTests(WatcherCase):
    def test_switchWithinASecond(self) -> None:
        """
        A new mode file applies once it has stayed the same for one poll:
        within two intervals, one second.
        """
        self.assertEqual(self.live.modeName, "claude")
        replace(self.modePath, "auto\n")
        self.poll()
        self.assertEqual(self.live.modeName, "claude")
        self.poll()
        self.assertEqual(self.live.modeName, "auto")

    def test_inPlaceRewriteAndDeletion(self) -> None:
        """
        C5: a mode file rewritten in place is applied; deleted, the default mode
        is back.
        """
        self.modePath.write_text("auto")
        self.poll(2)
        self.assertEqual(self.live.modeName, "auto")
        with self.modePath.open("w") as modeFile:
            modeFile.write("claude\n")
        self.poll(2)
        self.assertEqual(self.live.modeName, "claude")
        replace(self.modePath, "auto")
        self.poll(2)
        self.modePath.unlink()
        self.poll(2)
        self.assertEqual(self.live.modeName, "claude")
        self.assertEqual(self.live.modeSource.value, "default")

    def test_halfWrittenFileNotApplied(self) -> None:
        """
        C6: a file seen changing between two polls waits until it stops
        changing: the empty file an editor leaves for a moment is never
        reported.
        """
        self.modePath.write_text("auto")
        self.poll(2)
        self.modePath.write_text("")
        self.poll()
        self.modePath.write_text("claude")
        self.poll()
        self.assertIsNone(self.live.modeProblem)
        self.assertEqual(self.live.modeName, "auto")
        self.poll()
        self.assertEqual(self.live.modeName, "claude")
        self.assertIsNone(self.live.modeProblem)

    def test_unreadableModeFile(self) -> None:
        """
        C7: a mode file that cannot be read keeps the mode and says why.
        """
        self.modePath.write_text("auto")
        self.poll(2)
        self.modePath.unlink()
        self.modePath.mkdir()
        self.poll(2)
        self.assertEqual(self.live.modeName, "auto")
        self.assertEqual(self.live.modeProblem, "cannot be read: Is a directory")

    def test_fifoIsNotRead(self) -> None:
        """
        C7: a FIFO in place of the mode file would block a reader: it is refused
        without being waited on.
        """
        os.mkfifo(self.modePath)
        self.poll(2)
        self.assertEqual(self.live.modeProblem, "cannot be read: not a regular file")

    def test_permissionChangeIsNoticed(self) -> None:
        """
        A change of permissions alone (the file stays the same) is picked up,
        so a mode file that could not be read is read once it can be.
        """
        self.modePath.write_text("auto")
        self.poll(2)
        watched = SettledFile(str(self.modePath))
        watched.markApplied()
        self.modePath.chmod(0o600)
        self.assertFalse(watched.changed())
        self.assertTrue(watched.changed())

    def test_modeFileReadAtStart(self) -> None:
        self.modePath.write_text("auto")
        live = LiveState(self.live.config, self.clock.seconds, self.clock.seconds, None)
        watcher = Watcher(live, None, self.load, self.clock)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        self.assertEqual(live.modeName, "auto")

    def test_everyKindOfContent(self) -> None:
        """
        C7: garbage, an empty file, an unknown mode, 1 MB, binary bytes and
        a NUL keep the mode in force (and say why); a BOM, surrounding
        whitespace and a trailing newline are accepted.
        """
        self.modePath.write_text("auto")
        self.poll(2)
        for content in [
            b"garbage garbage",
            b"",
            b"nonsense",
            b"auto" * 262144,
            bytes(range(256)),
            b"au\x00to",
        ]:
            replace(self.modePath, content)
            self.poll(2)
            self.assertEqual(self.live.modeName, "auto", content[:20])
            self.assertIsNotNone(self.live.modeProblem, content[:20])
        for content, mode in [
            (b"\xef\xbb\xbfclaude", "claude"),
            (b"  auto \r\n", "auto"),
            (b"claude\n", "claude"),
        ]:
            replace(self.modePath, content)
            self.poll(2)
            self.assertEqual((self.live.modeName, self.live.modeProblem), (mode, None))


class ConfigFileTests(WatcherCase):
    def test_renamedConfigApplied(self) -> None:
        """
        C5: a config saved by renaming a new file over it (C{mv}, a new inode)
        is applied.
        """
        replace(self.configPath, CONFIG + "default_mode: auto\n")
        self.poll(2)
        self.assertEqual(self.live.config.defaultMode, "auto")
        self.assertEqual(self.live.modeName, "auto")

    def test_untouchedConfigNotReread(self) -> None:
        self.poll(20)
        self.assertEqual(self.loads, 1)

    def test_brokenConfigKeepsTheOld(self) -> None:
        """
        C1: a broken config is refused whole: the old one stays, the error names
        the file, line and key, and the file is not read again until it changes.
        """
        config = self.live.config
        replace(self.configPath, "modes:\n  claude: []\n  auto: {failover: [clade]}\n")
        self.poll(2)
        self.assertIs(self.live.config, config)
        assert self.live.lastReload is not None
        self.assertEqual(
            self.live.lastReload.error,
            f"{self.configPath}:3: modes.auto.failover[0]: no mode or upstream"
            " named 'clade'; did you mean 'claude'?",
        )
        self.poll(10)
        self.assertEqual(self.loads, 2)

    def test_deletedConfigKeepsTheOld(self) -> None:
        """
        C5: a deleted config keeps the one in force and says it cannot be read;
        written again, it is loaded.
        """
        config = self.live.config
        self.configPath.unlink()
        self.poll(2)
        self.assertIs(self.live.config, config)
        assert self.live.lastReload is not None
        self.assertIn("cannot read", self.live.lastReload.error or "")
        self.configPath.write_text(CONFIG)
        self.poll(2)
        self.assertIsNone(self.live.lastReload.error)

    def test_pollerSurvivesABug(self) -> None:
        def explode(path: str) -> Config:
            raise RuntimeError("bug")

        self.loader = explode
        replace(self.configPath, CONFIG + "# changed\n")
        self.poll(2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.loader = self.load
        replace(self.configPath, CONFIG + "default_mode: auto\n")
        self.poll(2)
        self.assertEqual(self.live.config.defaultMode, "auto")

    def test_reloadNow(self) -> None:
        """
        F21: C{SIGHUP}'s reload reads both files at once, without waiting.
        """
        self.configPath.write_text(CONFIG + "default_mode: auto\n")
        self.modePath.write_text("claude")
        self.watcher.reloadNow()
        self.assertEqual(self.live.config.defaultMode, "auto")
        self.assertEqual(self.live.modeName, "claude")

    def test_modeFileMovedByReload(self) -> None:
        """
        A config that names another mode file is checked against that
        file's content, not the old file's.
        """
        self.modePath.write_text("nonsense")
        self.poll(2)
        self.assertIsNotNone(self.live.modeProblem)
        other = self.directory / "elsewhere"
        other.write_text("auto")
        replace(self.configPath, CONFIG + f"mode_file: {other}\n")
        self.poll(2)
        self.assertEqual(self.live.modeName, "auto")
        self.assertIsNone(self.live.modeProblem)
        self.assertEqual(self.live.modeFile, str(other))

    def test_unusableVariableRefusesTheWholeReload(self) -> None:
        """
        C2: a reload whose config names an unset variable is refused whole,
        naming the variable: the config in force stays, mode and all.
        """
        config = self.live.config
        replace(
            self.configPath,
            CONFIG
            + "default_mode: auto\nupstreams:\n  zai:\n    url: https://a.example\n"
            "    auth: {header: x-api-key, value: '${ZAI_KEY}'}\n",
        )
        self.poll(2)
        self.assertIs(self.live.config, config)
        self.assertEqual(self.live.modeName, "claude")
        assert self.live.lastReload is not None
        self.assertEqual(
            self.live.lastReload.error,
            f"{self.configPath}:9: upstreams.zai.auth.value: environment variable"
            " ZAI_KEY is not set",
        )

    def assertReloadedOnce(self, defaultMode: str | None) -> None:
        """
        After a change: within two polls the config is read once, and no
        more while it stays as it is.  C{defaultMode} is the default mode of
        the config then in force, or L{None} if the file could not be read.
        """
        before = self.loads
        self.poll(2)
        self.assertEqual(self.loads, before + 1)
        self.poll(6)
        self.assertEqual(self.loads, before + 1)
        assert self.live.lastReload is not None
        if defaultMode is None:
            self.assertIn("cannot read", self.live.lastReload.error or "")
        else:
            self.assertIsNone(self.live.lastReload.error)
            self.assertEqual(self.live.config.defaultMode, defaultMode)

    def test_everyWayOfSaving(self) -> None:
        """
        C5: each way a config gets replaced is noticed within a second and
        read exactly once: a rename over it, a rewrite in place, vim's
        backup-and-rename, a symlink pointed elsewhere; its deletion, and
        its directory's, keep the config in force and say why.
        """
        path = self.configPath
        modes = iter(["auto", "claude"] * 10)

        def text() -> str:
            return CONFIG + f"default_mode: {next(modes)}\n"

        replace(path, text())
        self.assertReloadedOnce("auto")
        with path.open("w") as configFile:
            configFile.write(text() + "# rewritten in place\n")
        self.assertReloadedOnce("claude")
        # vim with 'backupcopy=no': the file is renamed to its backup and a
        # new one written in its place.
        backup = path.with_name(path.name + "~")
        os.rename(path, backup)
        path.write_text(text())
        backup.unlink()
        self.assertReloadedOnce("auto")
        elsewhere = self.directory / "elsewhere"
        elsewhere.mkdir()
        for name in ("a.yaml", "b.yaml"):
            (elsewhere / name).write_text(text())
        link = path.with_name("link.tmp")
        link.symlink_to(elsewhere / "a.yaml")
        os.replace(link, path)
        self.assertReloadedOnce("claude")
        link.symlink_to(elsewhere / "b.yaml")
        os.replace(link, path)
        self.assertReloadedOnce("auto")
        config = self.live.config
        path.unlink()
        self.assertReloadedOnce(None)
        self.assertIs(self.live.config, config)
        path.write_text(text())
        self.assertReloadedOnce("claude")
        config = self.live.config
        shutil.rmtree(self.directory)
        self.assertReloadedOnce(None)
        self.assertIs(self.live.config, config)

    def test_partialWriteNeverApplied(self) -> None:
        """
        C6: a config written in two halves is not applied half-written:
        the first half is not even read when the rest follows within a poll
        interval, and refused (the old config staying) when it lingers.
        """
        config = self.live.config
        whole = CONFIG + "default_mode: auto\n"
        half = whole[: len(whole) // 2 + 3]
        self.configPath.write_text(half)
        self.poll()
        self.configPath.write_text(whole)
        self.poll()
        self.assertEqual(self.loads, 1)
        self.assertIs(self.live.config, config)
        self.poll()
        self.assertEqual(self.loads, 2)
        self.assertEqual(self.live.config.defaultMode, "auto")

        config = self.live.config
        self.configPath.write_text(half)
        self.poll(2)
        self.assertIs(self.live.config, config)
        assert self.live.lastReload is not None
        self.assertIsNotNone(self.live.lastReload.error)
        self.configPath.write_text(whole.replace("auto\n", "claude\n"))
        self.poll(2)
        self.assertEqual(self.live.config.defaultMode, "claude")


class HangupTests(SynchronousTestCase):
    def test_sighupSchedulesAReload(self) -> None:
        """
        F21: C{SIGHUP} is caught (Twisted leaves it fatal) and hands the reload
        to the reactor thread; stopping restores the previous handler.
        """
        queued: list[Callable[[], None]] = []
        clock = Clock()
        config = loadConfig(None, {})
        live = LiveState(config, clock.seconds, clock.seconds)
        watcher = Watcher(live, None, lambda p: config, clock, queued.append)
        previous = signal.getsignal(signal.SIGHUP)
        watcher.startService()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            self.assertEqual(queued, [watcher.reloadNow])
        finally:
            watcher.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class SettledFileTests(SynchronousTestCase):
    def test_symlinkSwap(self) -> None:
        """
        C5: a symlink swapped to point at another file is a change, applied once
        it holds still.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        (directory / "a").write_text("one")
        (directory / "b").write_text("two")
        link = directory / "link"
        link.symlink_to(directory / "a")
        watched = SettledFile(str(link))
        watched.markApplied()
        self.assertFalse(watched.changed())
        swap = directory / "swap"
        swap.symlink_to(directory / "b")
        os.replace(swap, link)
        self.assertFalse(watched.changed())
        self.assertTrue(watched.changed())
        self.assertFalse(watched.changed())
