"""
File modes (S14): everything ccrouter creates is private to its user, and
the proxy refuses a config that someone else could rewrite
(L{ccrouter.files}, L{ccrouter.hardening}).
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.hardening import configFileProblem, tightenUmask
from tests.proxyprocess import childEnvironment
from tests.test_end_to_end import freePort, messageBody
from tests.test_logging_faults import HTTPCase, spawnTwistd, waitUntil

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class DaemonFilesTests(HTTPCase):
    def setUp(self) -> None:
        super().setUp()
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir(parents=True)
        self.home.chmod(0o755)
        self.configDirectory = self.home / "config"
        self.configDirectory.mkdir()
        self.configDirectory.chmod(0o755)
        self.environ = childEnvironment(
            {
                "HOME": str(self.home),
                "CCROUTER_CONFIG": str(self.configDirectory / "config.yaml"),
                "XDG_STATE_HOME": str(self.home / "state"),
            }
        )
        self.addCleanup(self.killDaemon)

    def pidFile(self) -> Path:
        return self.home / "state" / "ccrouter" / "ccrouter.pid"

    def killDaemon(self) -> None:
        try:
            pid = int(self.pidFile().read_text())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def ccrouter(self, *arguments: str) -> tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", "from ccrouter.cli import entryPoint; entryPoint()", *arguments],
            env=self.environ,
            reactor=reactor,
        )
        return code, out.decode(), err.decode()

    async def test_everyFileTheDaemonCreates(self) -> None:
        """
        S14: under C{umask 022}, C{ccrouter start} and the daemon it runs
        create the state directory 0700 and the pid file, the address
        file, the start-up log, the log and the breaker state 0600.
        """
        port = freePort()
        good = self.mock()
        (self.configDirectory / "config.yaml").write_text(
            f"server: {{port: {port}}}\n"
            "upstreams:\n"
            f'  dead: {{url: "http://127.0.0.1:{freePort()}"}}\n'
            f'  good: {{url: "{good.url}"}}\n'
            "modes:\n"
            "  auto: {failover: [dead, good]}\n"
            "breaker: {failures: 1}\n"
        )
        code, out, err = await self.ccrouter("start")
        self.assertEqual(code, 0, out + err)
        response = await self.http.post(
            f"http://127.0.0.1:{port}/v1/messages",
            data=messageBody("claude-sonnet-4-5", stream=False),
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(response.code, 200)
        await response.content()
        breakers = self.configDirectory / "breakers.json"

        async def saved() -> bool:
            return breakers.exists()

        await waitUntil(saved, what="the breaker state to be saved")

        state = self.home / "state" / "ccrouter"
        private = {
            name: mode(state / name)
            for name in (
                "ccrouter.pid",
                "ccrouter.address",
                "ccrouter.log",
                "startup.log",
            )
        }
        private["breakers.json"] = mode(breakers)
        self.assertEqual(private, dict.fromkeys(private, 0o600))
        self.assertEqual(mode(state), 0o700)
        self.assertEqual(mode(state.parent), 0o700)

        code, out, err = await self.ccrouter("stop")
        self.assertEqual(code, 0, out + err)


class UmaskTests(SynchronousTestCase):
    def test_tightenUmask(self) -> None:
        """
        S14: the proxy's process takes group and others out of its umask,
        keeping any other bit it had.
        """
        previous = os.umask(0o022)
        try:
            self.assertEqual(tightenUmask(), 0o022)
            self.assertEqual(os.umask(0o002), 0o077)
            tightenUmask()
            self.assertEqual(os.umask(0o277), 0o077)
            tightenUmask()
            self.assertEqual(os.umask(0), 0o277)
        finally:
            os.umask(previous)


class ConfigFileProblemTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        self.path = directory / "config.yaml"
        self.path.write_text("default: {url: 'https://api.anthropic.com'}\n")

    def test_private(self) -> None:
        self.path.chmod(0o600)
        self.assertIsNone(configFileProblem(str(self.path)))

    def test_readableByOthers(self) -> None:
        """
        S14: a config others can read but not write is not refused (a key
        written in full in it draws a warning instead, see test_tap).
        """
        self.path.chmod(0o644)
        self.assertIsNone(configFileProblem(str(self.path)))

    def test_writableByGroupOrOthers(self) -> None:
        """
        S14: a config its group or other users can write is refused, with
        the path and the chmod to run.
        """
        for permissions, who in [
            (0o664, "its group"),
            (0o646, "all other users"),
            (0o666, "its group and all other users"),
        ]:
            self.path.chmod(permissions)
            problem = configFileProblem(str(self.path))
            assert problem is not None
            self.assertEqual(
                problem,
                f"ccrouter: refusing to start: {self.path} can be changed by"
                f" {who} (mode {permissions:04o}), who could change where your"
                " requests and keys go; run"
                f" 'chmod 600 {shlex.quote(str(self.path))}'",
            )

    def test_ownedByAnotherUser(self) -> None:
        """
        S14: a config owned by another user is refused; one owned by root
        is not (root can change anything anyway).
        """
        self.path.chmod(0o644)
        if os.geteuid() == 0:
            os.chown(self.path, NOBODY, -1)
            problem = configFileProblem(str(self.path))
            self.assertIsNotNone(problem)
            self.assertIn(f"belongs to another user (uid {NOBODY})", str(problem))
            os.chown(self.path, 0, -1)
            self.assertIsNone(configFileProblem(str(self.path), uid=NOBODY))
        else:
            problem = configFileProblem(str(self.path), uid=os.geteuid() + 1)
            self.assertIsNotNone(problem)
            self.assertIn(f"(uid {os.geteuid()})", str(problem))
        self.assertIsNone(configFileProblem(str(self.path)))


class RefusedAtStartTests(HTTPCase):
    async def refused(self, path: Path) -> str:
        child = spawnTwistd(self, [], ["--config", str(path), "--listen", "tcp:0"])
        await child.ended(30)
        self.assertEqual(child.exitCode, 1, child.stdout + child.stderr)
        self.assertNotIn(b"listening on", child.stdout)
        self.assertNotIn(b"Traceback", child.stdout + child.stderr)
        return child.stderr.decode()

    def config(self) -> Path:
        path = Path(self.writeConfig(f'default: {{url: "{self.mock().url}"}}\n'))
        return path

    async def test_groupWritableConfig(self) -> None:
        """
        S14: C{twistd ccrouter} with a group-writable config exits with
        status 1 and one line on standard error naming the file and the
        chmod to run; nothing listens.
        """
        path = self.config()
        path.chmod(0o664)
        stderr = await self.refused(path)
        self.assertEqual(
            stderr,
            f"ccrouter: refusing to start: {path} can be changed by its group"
            " (mode 0664), who could change where your requests and keys go;"
            f" run 'chmod 600 {path}'\n",
        )

    async def test_worldWritableConfig(self) -> None:
        """
        S14: the same for a config every user can write.
        """
        path = self.config()
        path.chmod(0o666)
        stderr = await self.refused(path)
        self.assertIn("can be changed by its group and all other users", stderr)

    async def test_configOfAnotherUser(self) -> None:
        """
        S14: a config owned by another user (C{nobody}) is refused.
        """
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a file to another user")
        path = self.config()
        os.chown(path, NOBODY, -1)
        stderr = await self.refused(path)
        self.assertIn(f"belongs to another user (uid {NOBODY})", stderr)
