"""
The C{ccrouter} command against a real daemon: each test runs the command
as a child process (the repository first on its import path) in a fresh
C{CCROUTER_HOME}, and the daemon it starts is a real C{twistd} process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccrouter.config import parseConfig
from ccrouter.control import proxyAddress
from ccrouter.daemon import _splitOptions, describeHealth
from tests.mockupstream import MockUpstream, anthropicMessage, respondJSON
from tests.proxyprocess import ProxyProcess, childEnvironment
from tests.test_end_to_end import freePort
from tests.test_end_to_end_modes import waitFor

CANARY = "zai-DAEMON-CANARY-5d1e"


def fetch(url: str, body: bytes | None = None) -> Deferred[bytes]:
    """
    The body of a plain HTTP request, made in a thread (no proxy
    environment: the address is local).
    """

    def get() -> bytes:
        request = urllib.request.Request(
            url, data=body, headers={"content-type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            data: bytes = response.read()
            return data

    return deferToThread(get)


class CommandCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir(parents=True)
        self.port = freePort()
        self.environ = childEnvironment(
            {"CCROUTER_HOME": str(self.home), "HOME": str(self.home), "ZKEY": CANARY}
        )
        self.addCleanup(self.killDaemon)

    def writeConfig(self, text: str) -> None:
        (self.home / "config.yaml").write_text(text)

    def modesConfig(self, upstream: str = "http://127.0.0.1:9") -> str:
        return f"""
server: {{port: {self.port}}}
default: {{url: "{upstream}"}}
upstreams:
  zai: {{url: "http://127.0.0.1:9", auth: {{header: x-api-key, value: "${{ZKEY}}"}}}}
modes:
  glm:
    - match: "claude-*"
      model: glm-4.6
      upstream: zai
  claude: []
  auto: {{failover: [glm, claude]}}
default_mode: auto
"""

    async def ccrouter(self, *arguments: str) -> tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", "from ccrouter.cli import entryPoint; entryPoint()", *arguments],
            env=self.environ,
            reactor=reactor,
        )
        return code, out.decode(), err.decode()

    def pid(self) -> int | None:
        try:
            return int((self.home / "ccrouter.pid").read_text())
        except (OSError, ValueError):
            return None

    def killDaemon(self) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class LifecycleTests(CommandCase):
    async def test_startStatusModeExplainStop(self) -> None:
        """
        The whole loop a user goes through, against one real daemon.
        """
        self.writeConfig(self.modesConfig())
        code, out, err = await self.ccrouter("start")
        self.assertEqual(code, 0, err)
        pid = self.pid()
        assert pid is not None
        self.assertIn(f"ccrouter started (pid {pid})", out)
        self.assertIn(f"http://127.0.0.1:{self.port}", out)

        code, out, err = await self.ccrouter("status")
        self.assertEqual(code, 0, err)
        self.assertIn(f"running (pid {pid})", out)
        self.assertIn(f"tcp:{self.port}:interface=127.0.0.1", out)
        self.assertIn("mode: auto (from the default)", out)
        self.assertIn("glm     closed", out)

        code, out, err = await self.ccrouter("c")
        self.assertEqual((code, out), (0, "mode: claude (was auto)\n"), err)
        self.assertEqual((self.home / "mode").read_text(), "claude\n")
        code, out, _ = await self.ccrouter("mode")
        self.assertEqual(out, "claude (from the mode file)\n")
        code, out, _ = await self.ccrouter("auto")
        self.assertEqual(out, "mode: auto (was claude)\n")

        code, out, err = await self.ccrouter("explain", "claude-sonnet-4-5")
        self.assertEqual(code, 0, err)
        self.assertIn("mode: auto (the running proxy's mode)", out)
        self.assertIn(
            "1. glm: route modes.glm[0] (claude-*) -> upstream zai (127.0.0.1:9),"
            " as glm-4.6; breaker closed",
            out,
        )
        self.assertIn("2. claude: no route matches -> upstream default", out)
        self.assertIn("next request: goes to glm, then claude if it fails", out)

        code, out, _ = await self.ccrouter("health")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("ok: ccrouter"), out)
        code, out, _ = await self.ccrouter("--check")
        self.assertEqual(code, 0)

        code, out, _ = await self.ccrouter("logs", "-n", "200")
        self.assertEqual(code, 0)
        self.assertIn("mode is now claude", out)
        for text in (out, (self.home / "ccrouter.log").read_text()):
            self.assertNotIn(CANARY, text)
        for line in (self.home / "ccrouter.log").read_text().splitlines():
            json.loads(line)
        self.assertEqual((self.home / "ccrouter.log").stat().st_mode & 0o777, 0o600)

        code, out, err = await self.ccrouter("stop")
        self.assertEqual((code, out), (0, f"ccrouter stopped (pid {pid})\n"), err)
        self.assertFalse((self.home / "ccrouter.pid").exists())
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        code, out, _ = await self.ccrouter("status")
        self.assertEqual((code, out), (1, "ccrouter is not running\n"))
        code, out, _ = await self.ccrouter("health")
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith("down: nothing answers at"), out)

    async def test_startTwiceAndRestart(self) -> None:
        self.writeConfig(self.modesConfig())
        self.assertEqual((await self.ccrouter("start"))[0], 0)
        first = self.pid()
        code, out, _ = await self.ccrouter("start")
        self.assertEqual(
            (code, out), (0, f"ccrouter is already running (pid {first})\n")
        )
        code, out, err = await self.ccrouter("restart")
        self.assertEqual(code, 0, err)
        second = self.pid()
        self.assertNotEqual(first, second)
        self.assertIn(f"ccrouter stopped (pid {first})", out)
        self.assertIn(f"ccrouter started (pid {second})", out)
        self.assertEqual((await self.ccrouter("stop"))[0], 0)

    async def test_stalePidFile(self) -> None:
        """
        A pid file left by a process that is gone (or whose pid now belongs
        to something else) is cleaned up, never trusted.
        """
        self.writeConfig(self.modesConfig())
        (self.home / "ccrouter.pid").write_text(str(os.getpid()))
        code, out, err = await self.ccrouter("status")
        self.assertEqual((code, out), (1, "ccrouter is not running\n"))
        self.assertIn("removed a stale pid file", err)
        self.assertFalse((self.home / "ccrouter.pid").exists())
        # A process that merely mentions ccrouter (a tail on its log) is
        # not the daemon, and must not be stopped as one.
        (self.home / "ccrouter.log").write_text("")
        tail = subprocess.Popen(["tail", "-f", str(self.home / "ccrouter.log")])
        self.addCleanup(tail.wait)
        self.addCleanup(tail.kill)
        (self.home / "ccrouter.pid").write_text(str(tail.pid))
        code, out, err = await self.ccrouter("stop")
        self.assertEqual((code, out), (0, "ccrouter is not running\n"))
        self.assertIn("removed a stale pid file", err)
        self.assertIsNone(tail.poll())
        (self.home / "ccrouter.pid").write_text("999999999\n")
        code, out, err = await self.ccrouter("start")
        self.assertEqual(code, 0, err)
        self.assertIn("removed a stale pid file", err)
        self.assertEqual((await self.ccrouter("stop"))[0], 0)

    async def test_proxiesRequests(self) -> None:
        """
        The daemon 'start' leaves behind serves requests like any ccrouter.
        """
        mock = MockUpstream(respondJSON(anthropicMessage("via the daemon")))
        mock.listen()
        self.addCleanup(mock.stop)
        self.writeConfig(self.modesConfig(mock.url))
        self.assertEqual((await self.ccrouter("start"))[0], 0)
        self.assertEqual((await self.ccrouter("claude"))[0], 0)
        out = await fetch(
            f"http://127.0.0.1:{self.port}/v1/messages",
            b'{"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}',
        )
        self.assertEqual(json.loads(out)["content"][0]["text"], "via the daemon")
        self.assertEqual((await self.ccrouter("stop"))[0], 0)


class _Follower(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class FollowTests(CommandCase):
    async def test_logsFollow(self) -> None:
        """
        C{logs -f} prints what the daemon logs after it started following.
        """
        self.writeConfig(self.modesConfig())
        self.assertEqual((await self.ccrouter("start"))[0], 0)
        follower = _Follower()
        process = reactor.spawnProcess(
            follower,
            sys.executable,
            [
                sys.executable,
                "-c",
                "from ccrouter.cli import entryPoint; entryPoint()",
                "logs",
                "-f",
                "-n",
                "1",
            ],
            env=self.environ,
        )
        self.addCleanup(lambda: follower.ended)
        self.addCleanup(process.signalProcess, "KILL")
        await waitFor(lambda: follower.output, what="the last log line")
        self.assertNotIn(b"mode is now claude", follower.output)
        self.assertEqual((await self.ccrouter("claude"))[0], 0)
        await waitFor(
            lambda: b"mode is now claude" in follower.output,
            what="the mode switch in the followed log",
            detail=lambda: follower.output,
        )
        self.assertEqual((await self.ccrouter("stop"))[0], 0)


class AddressTests(CommandCase):
    async def test_unixSocketOnly(self) -> None:
        """
        A proxy that listens only on a UNIX socket is still started,
        queried and stopped; Claude Code cannot be pointed at it.
        """
        socketPath = self.home / "ccrouter.sock"
        self.writeConfig(f'server: {{listen: ["unix:{socketPath}"]}}\n')
        code, out, err = await self.ccrouter("start")
        self.assertEqual(code, 0, err)
        self.assertIn(f"listening on unix:{socketPath}", out)
        code, out, err = await self.ccrouter("status")
        self.assertEqual(code, 0, err)
        code, _, err = await self.ccrouter("setup", "claude")
        self.assertEqual(code, 1)
        self.assertIn("needs an http:// address", err)
        self.assertEqual((await self.ccrouter("stop"))[0], 0)

    async def test_addressFromTheStartingEnvironment(self) -> None:
        """
        A daemon started with C{CCROUTER_PORT} is found by commands run
        without it.
        """
        self.writeConfig(self.modesConfig())
        other = freePort()
        self.environ["CCROUTER_PORT"] = str(other)
        self.assertEqual((await self.ccrouter("start"))[0], 0)
        del self.environ["CCROUTER_PORT"]
        code, out, err = await self.ccrouter("status")
        self.assertEqual(code, 0, err)
        self.assertIn(f"http://127.0.0.1:{other}", out)
        code, out, err = await self.ccrouter("c")
        self.assertEqual((code, out), (0, "mode: claude (was auto)\n"), err)
        self.assertEqual((await self.ccrouter("stop"))[0], 0)

    async def test_configShowWithoutTheKeys(self) -> None:
        """
        The shell may lack the keys the daemon gets from elsewhere: the
        config is still shown, and the key says where it comes from.
        """
        self.writeConfig(self.modesConfig())
        del self.environ["ZKEY"]
        code, out, err = await self.ccrouter("config", "show")
        self.assertEqual(code, 0, err)
        self.assertIn("<from the environment; not set in this shell>", out)


class ServeTests(CommandCase):
    async def test_serveRunsInTheForeground(self) -> None:
        """
        C{ccrouter serve} is C{twistd -n ccrouter} with the config from
        C{CCROUTER_HOME}; twistd's own options pass through.
        """
        self.writeConfig(self.modesConfig())
        proxy = ProxyProcess(
            ["--umask", "0077", "--listen", "tcp:0:interface=127.0.0.1"],
            {"CCROUTER_HOME": str(self.home), "ZKEY": CANARY},
            runner="serve",
        )
        self.addCleanup(proxy.stop)
        url = await proxy.start()
        out = await fetch(f"{url}/health")
        health = json.loads(out)
        self.assertEqual(health["pid"], proxy.pid)
        self.assertEqual(health["config"]["path"], str(self.home / "config.yaml"))
        self.assertEqual(health["mode"], "auto")
        self.assertFalse((self.home / "ccrouter.pid").exists())


class FailureTests(CommandCase):
    async def test_invalidConfig(self) -> None:
        self.writeConfig("routes:\n  - match: x\n    uptream: y\n")
        code, _out, err = await self.ccrouter("start")
        self.assertEqual(code, 1)
        self.assertIn("config.yaml:3: routes[0].uptream: unknown key 'uptream'", err)
        self.assertIsNone(self.pid())

    async def test_portTaken(self) -> None:
        """
        A daemon that cannot start makes 'start' fail with the reason it
        logged.
        """
        self.writeConfig(self.modesConfig())
        import socket

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", self.port))
            taken.listen(1)
            code, _out, err = await self.ccrouter("start", "--timeout", "10")
        self.assertEqual(code, 1)
        self.assertIn("ccrouter did not start", err)
        self.assertIn("Address already in use", err)

    async def test_unknownWord(self) -> None:
        self.writeConfig(self.modesConfig())
        code, _, err = await self.ccrouter("clade")
        self.assertEqual(code, 2)
        self.assertIn(
            "'clade' is neither a command nor a mode; did you mean 'claude'?", err
        )
        code, _, err = await self.ccrouter("status", "--bogus")
        self.assertEqual(code, 2)

    async def test_modeWhileStopped(self) -> None:
        """
        C11: modes can be switched while the daemon is stopped, and from a shell
        that lacks the provider keys the config refers to.
        """
        self.writeConfig(self.modesConfig())
        del self.environ["ZKEY"]
        code, out, _ = await self.ccrouter("mode", "glm")
        self.assertEqual(
            (code, out),
            (0, "mode: glm (ccrouter is not running; it will start in it)\n"),
        )
        code, out, _ = await self.ccrouter("mode")
        self.assertEqual(out, "glm (from the mode file; ccrouter is not running)\n")

    async def test_modeSwitchIsAtomic(self) -> None:
        """
        C11: C{ccrouter mode} replaces the mode file by renaming a complete
        new file over it (a new inode; a reader never sees it half written)
        and leaves no temporary file behind; an unknown mode exits non-zero
        and leaves the file as it was.
        """
        self.writeConfig(self.modesConfig())
        modeFile = self.home / "mode"
        modeFile.write_text("claude\n")
        names = sorted(path.name for path in self.home.iterdir())
        inode = modeFile.stat().st_ino
        code, _, _ = await self.ccrouter("mode", "glm")
        self.assertEqual(code, 0)
        self.assertEqual(modeFile.read_text(), "glm\n")
        self.assertNotEqual(modeFile.stat().st_ino, inode)
        self.assertEqual(sorted(path.name for path in self.home.iterdir()), names)
        inode = modeFile.stat().st_ino
        code, _, err = await self.ccrouter("mode", "nonsense")
        self.assertNotEqual(code, 0)
        self.assertIn("'nonsense' is neither a command nor a mode", err)
        self.assertEqual(
            (modeFile.read_text(), modeFile.stat().st_ino), ("glm\n", inode)
        )

    async def test_degradedHealthFails(self) -> None:
        self.writeConfig(self.modesConfig())
        (self.home / "mode").write_text("nonsense\n")
        self.assertEqual((await self.ccrouter("start"))[0], 0)
        code, out, _ = await self.ccrouter("health")
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith("degraded:"), out)
        self.assertIn("names unknown mode 'nonsense'", out)
        self.assertEqual((await self.ccrouter("stop"))[0], 0)


class PureTests(SynchronousTestCase):
    def test_splitOptions(self) -> None:
        self.assertEqual(
            _splitOptions(
                [
                    "--logfile",
                    "x.log",
                    "--config",
                    "c.yaml",
                    "--listen=tcp:1",
                    "-r",
                    "poll",
                ]
            ),
            (
                ["--logfile", "x.log", "-r", "poll"],
                ["--config", "c.yaml", "--listen=tcp:1"],
            ),
        )

    def test_proxyAddress(self) -> None:
        def address(text: str, environ: dict[str, str] | None = None) -> str:
            return proxyAddress(parseConfig(text, "c.yaml", environ or {})).url

        self.assertEqual(address(""), "http://127.0.0.1:8080")
        self.assertEqual(address("server: {port: 9000}"), "http://127.0.0.1:9000")
        self.assertEqual(
            address("", {"CCROUTER_PORT": "9001"}), "http://127.0.0.1:9001"
        )
        self.assertEqual(
            address(
                "server: {listen: ['unix:/tmp/s', 'tcp6:9002:interface=\\\\:\\\\:1']}"
            ),
            "http://[::1]:9002",
        )
        self.assertEqual(
            address("server: {port: 9003, listen: ['systemd:domain=INET:index=0']}"),
            "http://127.0.0.1:9003",
        )

    def test_describeHealth(self) -> None:
        health = {
            "config": {
                "path": "/c.yaml",
                "last_reload": {"ok": False, "error": "c.yaml:3: x"},
            },
            "mode": "auto",
            "mode_source": "file",
            "mode_file": "/mode",
            "mode_file_problem": None,
            "auto_switch": {
                "preferred": "glm",
                "current": "claude",
                "switched": True,
                "failovers": 4,
            },
            "targets": {
                "glm": {
                    "state": "open",
                    "cooldown_remaining_seconds": 1534.2,
                    "cooldown_source": "schedule",
                    "consecutive_failures": 0,
                    "last_failure": {
                        "seconds_ago": 65,
                        "reason": "HTTP 529 (overloaded)",
                    },
                    "requests": 9,
                    "failures": 3,
                },
            },
        }
        self.assertEqual(
            describeHealth(health),
            [
                "config: /c.yaml (the last reload failed: c.yaml:3: x)",
                "mode: auto (from the mode file)",
                "failover: on claude instead of glm (4 failovers so far)",
                "targets:",
                "  glm  open       cooldown 25m34s left (schedule); last failure 1m05s"
                " ago: HTTP 529 (overloaded); 9 requests, 3 failed",
            ],
        )
