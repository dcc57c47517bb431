"""
Tests for C{ccrouter service install | uninstall} (L{ccrouter.service}): the
generated systemd units pass C{systemd-analyze verify}, socket activation
works end to end under C{systemd-socket-activate}, the launchd plist has
the right keys, and install/uninstall write and remove the files.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ccrouter import service as servicemodule
from ccrouter.cli import Context, main
from ccrouter.control import Address
from ccrouter.paths import resolvePaths
from ccrouter.service import (
    LAUNCHD_LABEL,
    SOCKET_ENDPOINT,
    Outcome,
    launchdAgent,
    serverCommand,
    serviceEnvironment,
    systemdQuote,
    systemdService,
    systemdSocket,
    twistdCommand,
)
from tests.proxyprocess import REPOSITORY, ProxyProcess

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def _verify(directory: Path, names: Sequence[str]) -> tuple[int, str]:
    """
    Run C{systemd-analyze verify} on unit files in C{directory}: as the user
    manager checks them (with a private runtime directory, so no running
    systemd is needed), or as the system manager where the user one cannot
    start.
    """
    assert SYSTEMD_ANALYZE is not None
    runtime = directory / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "XDG_RUNTIME_DIR": str(runtime),
        "SYSTEMD_LOG_COLOR": "0",
    }
    files = [str(directory / name) for name in names]
    output = ""
    for scope in (["--user"], []):
        result = subprocess.run(
            [SYSTEMD_ANALYZE, *scope, "verify", "--man=no", *files],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        if "Failed to initialize manager" not in output:
            return result.returncode, output
    raise SkipTest(f"systemd-analyze verify cannot start a manager here: {output}")


def _complaints(output: str, names: Sequence[str]) -> list[str]:
    """
    The lines of C{systemd-analyze verify}'s output about our units.
    """
    return [line for line in output.splitlines() if any(n in line for n in names)]


class GeneratorTests(SynchronousTestCase):
    """
    The unit files and the plist, as text.
    """

    python = sys.executable

    def test_twistdBesideThePython(self) -> None:
        """
        The twistd script beside the interpreter is used when there is one,
        otherwise the interpreter runs twistd's C{run}.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        python = directory / "python"
        python.symlink_to(sys.executable)
        self.assertEqual(
            twistdCommand(str(python)),
            [str(python), "-c", "from twisted.scripts.twistd import run; run()"],
        )
        twistd = directory / "twistd"
        twistd.write_text("#!/bin/sh\n")
        twistd.chmod(0o755)
        self.assertEqual(twistdCommand(str(python)), [str(twistd)])

    def test_service(self) -> None:
        """
        C13: the service unit restarts on failure, gives the proxy's drain
        (30 s by default) 15 s more before SIGKILL, sends SIGTERM to the
        proxy alone (C{KillMode=mixed}), keeps its files private, allows
        65536 open files and no privilege gain.
        """
        text = systemdService(
            "/opt/cc/bin/python",
            "/home/u/.config/ccrouter/config.yaml",
            {"PYTHONUNBUFFERED": "1", "CCROUTER_HOME": "/srv/cc"},
            socket=False,
            environmentFile="/home/u/.config/ccrouter/service.env",
        )
        lines = text.splitlines()
        self.assertIn(
            "ExecStart=/opt/cc/bin/python -c"
            ' "from twisted.scripts.twistd import run; run()"'
            " -n --pidfile= ccrouter --config /home/u/.config/ccrouter/config.yaml",
            lines,
        )
        for line in [
            "[Service]",
            "Type=exec",
            "Restart=on-failure",
            "RestartSec=2",
            "TimeoutStopSec=45",
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            "UMask=0077",
            "LimitNOFILE=65536",
            "NoNewPrivileges=yes",
            "Environment=PYTHONUNBUFFERED=1",
            "Environment=CCROUTER_HOME=/srv/cc",
            "EnvironmentFile=-/home/u/.config/ccrouter/service.env",
            "[Install]",
            "WantedBy=default.target",
        ]:
            self.assertIn(line, lines)
        self.assertNotIn("Requires=ccrouter.socket", lines)
        self.assertNotIn("--listen", text)
        self.assertTrue(text.endswith("\n"))

    def test_stopTimeoutFollowsTheDrain(self) -> None:
        """
        C13: a longer C{server.drain_timeout} gets a longer
        C{TimeoutStopSec}, always 15 s past it (whole seconds, rounded up).
        """
        for drain, expected in ((30, 45), (100, 115), (2.5, 18), (1, 16)):
            lines = systemdService("/x/python", None, {}, False, drain=drain)
            self.assertIn(f"TimeoutStopSec={expected}", lines.splitlines())

    def test_serviceWithoutConfig(self) -> None:
        """
        With no config file, the service runs the built-in default.
        """
        text = systemdService("/x/python", None, {}, socket=False)
        self.assertNotIn("--config", text)

    def test_serviceForSocket(self) -> None:
        text = systemdService("/x/python", "/c.yaml", {}, socket=True)
        lines = text.splitlines()
        self.assertIn("Requires=ccrouter.socket", lines)
        self.assertIn("After=ccrouter.socket", lines)
        self.assertIn("Also=ccrouter.socket", lines)
        execStart = next(line for line in lines if line.startswith("ExecStart="))
        self.assertTrue(
            execStart.endswith(f"--config /c.yaml --listen {SOCKET_ENDPOINT}")
        )

    def test_socket(self) -> None:
        lines = systemdSocket(Address("127.0.0.1", 8123)).splitlines()
        self.assertIn("ListenStream=127.0.0.1:8123", lines)
        self.assertIn("FileDescriptorName=ccrouter", lines)
        self.assertIn("WantedBy=sockets.target", lines)
        self.assertIn(
            "ListenStream=[::1]:8080", systemdSocket(Address("::1", 8080)).splitlines()
        )

    def test_quoting(self) -> None:
        """
        Words with blanks are quoted; specifiers and variables are escaped,
        so that a path reaches twistd as it is.
        """
        self.assertEqual(systemdQuote("/a/b"), "/a/b")
        self.assertEqual(systemdQuote("--pidfile="), "--pidfile=")
        self.assertEqual(systemdQuote("/my dir/x"), '"/my dir/x"')
        self.assertEqual(systemdQuote("/100%/$HOME"), "/100%%/$$HOME")
        self.assertEqual(systemdQuote('a"b\\c'), '"a\\"b\\\\c"')
        self.assertEqual(systemdQuote(";"), '";"')
        self.assertRaises(ValueError, systemdQuote, "a\nb")
        text = systemdService(
            "/x/python", "/my configs/100%.yaml", {"CCROUTER_HOME": "/a b"}, False
        )
        self.assertIn('--config "/my configs/100%%.yaml"', text)
        self.assertIn('Environment="CCROUTER_HOME=/a b"', text.splitlines())

    def test_noSecrets(self) -> None:
        """
        Only the listed variables are copied into the unit: no keys, no
        tokens, no upstream URL with a password in it.
        """
        environ = {
            "HOME": "/home/u",
            "PATH": "/usr/bin",
            "ANTHROPIC_API_KEY": "sk-ant-secret",
            "Z_AI_API_KEY": "zai-secret",
            "ANTHROPIC_AUTH_TOKEN": "token-secret",
            "CCROUTER_HOME": "/srv/cc",
            "CCROUTER_PORT": "9000",
            "CCROUTER_UPSTREAM": "https://user:pw-secret@proxy.example",
        }
        kept = serviceEnvironment(environ)
        self.assertEqual(
            kept,
            {
                "PYTHONUNBUFFERED": "1",
                "CCROUTER_HOME": "/srv/cc",
                "CCROUTER_PORT": "9000",
            },
        )
        text = systemdService("/x/python", None, kept, socket=True)
        plist = launchdAgent("/x/python", None, kept, "/state").decode()
        for secret in ("sk-ant-secret", "zai-secret", "token-secret", "pw-secret"):
            self.assertNotIn(secret, text)
            self.assertNotIn(secret, plist)
        self.assertEqual(
            serviceEnvironment({"CCROUTER_UPSTREAM": "https://gw.example"}),
            {"PYTHONUNBUFFERED": "1", "CCROUTER_UPSTREAM": "https://gw.example"},
        )

    def test_plist(self) -> None:
        """
        The launchd agent is a valid XML property list with the keys launchd
        needs.
        """
        data = launchdAgent(
            "/x/python",
            "/Users/u/.config/ccrouter/config.yaml",
            {"PYTHONUNBUFFERED": "1", "CCROUTER_HOME": "/Users/u/cc"},
            "/Users/u/.local/state/ccrouter",
        )
        self.assertTrue(data.startswith(b"<?xml"))
        agent = plistlib.loads(data, fmt=plistlib.FMT_XML)
        self.assertEqual(agent["Label"], LAUNCHD_LABEL)
        self.assertEqual(
            agent["ProgramArguments"],
            [
                *twistdCommand("/x/python"),
                "-n",
                "--pidfile=",
                "ccrouter",
                "--config",
                "/Users/u/.config/ccrouter/config.yaml",
            ],
        )
        self.assertIs(agent["RunAtLoad"], True)
        self.assertEqual(agent["KeepAlive"], {"SuccessfulExit": False})
        self.assertEqual(
            agent["StandardOutPath"], "/Users/u/.local/state/ccrouter/service.log"
        )
        self.assertEqual(
            agent["StandardErrorPath"], "/Users/u/.local/state/ccrouter/service.log"
        )
        self.assertEqual(
            agent["EnvironmentVariables"],
            {"PYTHONUNBUFFERED": "1", "CCROUTER_HOME": "/Users/u/cc"},
        )


class VerifyTests(SynchronousTestCase):
    """
    C{systemd-analyze verify} accepts the generated units.
    """

    def setUp(self) -> None:
        if SYSTEMD_ANALYZE is None:
            raise SkipTest(
                "systemd-analyze is not installed (Debian: apt install systemd)"
            )
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)

    def verify(self, files: Mapping[str, str]) -> None:
        for name, text in files.items():
            (self.directory / name).write_text(text)
        status, output = _verify(self.directory, list(files))
        self.assertEqual(status, 0, output)
        self.assertEqual(_complaints(output, list(files)), [], output)

    def test_service(self) -> None:
        """
        C13: C{systemd-analyze verify} accepts the service unit with its
        hardening and stop settings.
        """
        config = self.directory / "my config" / "config.yaml"
        self.verify(
            {
                "ccrouter.service": systemdService(
                    sys.executable,
                    str(config),
                    serviceEnvironment({"CCROUTER_HOME": "/tmp/a b%"}),
                    socket=False,
                    environmentFile=str(self.directory / "service.env"),
                )
            }
        )

    def test_serviceRunningPython(self) -> None:
        """
        The form without a twistd script beside the interpreter passes too.
        """
        bin = self.directory / "bin"
        bin.mkdir()
        (bin / "python").symlink_to(sys.executable)
        text = systemdService(str(bin / "python"), None, {}, socket=False)
        self.assertIn(" -c ", text)
        self.verify({"ccrouter.service": text})

    def test_socket(self) -> None:
        self.verify(
            {
                "ccrouter.service": systemdService(
                    sys.executable, None, serviceEnvironment({}), socket=True
                ),
                "ccrouter.socket": systemdSocket(Address("127.0.0.1", 8080)),
            }
        )

    def test_installedFiles(self) -> None:
        """
        C13: what C{ccrouter service install --socket} writes passes as well.
        """
        home = self.directory / "home"
        status = main(
            ["service", "install", "--socket", "--no-enable"],
            {"HOME": str(home), "CCROUTER_HOME": str(home / "cc")},
            StringIO(),
            StringIO(),
        )
        self.assertEqual(status, 0)
        units = home / ".config" / "systemd" / "user"
        for name in ("ccrouter.service", "ccrouter.socket"):
            shutil.copy(units / name, self.directory / name)
        status, output = _verify(
            self.directory, ["ccrouter.service", "ccrouter.socket"]
        )
        self.assertEqual(status, 0, output)
        self.assertEqual(_complaints(output, ["ccrouter."]), [], output)

    def test_verifyFindsProblems(self) -> None:
        """
        C13: the check is not vacuous: a unit with a mistake draws a
        complaint.
        """
        text = systemdService(sys.executable, None, {}, socket=False)
        (self.directory / "ccrouter.service").write_text(
            text.replace("Type=exec", "Type=exex")
        )
        _, output = _verify(self.directory, ["ccrouter.service"])
        self.assertNotEqual(_complaints(output, ["ccrouter.service"]), [], output)


def _freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SocketActivationTests(TestCase):
    """
    The service's command line adopts a socket systemd passes it.
    """

    timeout = 90

    async def test_healthThroughAnActivatedSocket(self) -> None:
        if SOCKET_ACTIVATE is None:
            raise SkipTest(
                "systemd-socket-activate is not installed (Debian: apt install systemd)"
            )
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        config = directory / "config.yaml"
        config.write_text('server:\n  port: 1\ndefault:\n  url: "http://127.0.0.1:9"\n')
        port = _freePort()
        environ = {
            "PYTHONPATH": str(REPOSITORY),
            "PYTHONUNBUFFERED": "1",
            "HOME": str(directory),
            "CCROUTER_HOME": str(directory),
        }
        process = ProxyProcess([])
        # Exactly what ccrouter.service runs, under a socket systemd made.
        process.command = [
            SOCKET_ACTIVATE,
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=ccrouter",
            *(f"-E{name}={value}" for name, value in environ.items()),
            *serverCommand(sys.executable, str(config), socket=True),
        ]
        listening = process.start(timeout=60)
        self.addCleanup(process.stop)

        # systemd-socket-activate says when it listens; twistd is started
        # only by the first connection.
        for _ in range(400):
            if b"Listening on" in process.stderr or process.exited.called:
                break
            await deferLater(reactor, 0.05)
        self.assertIn(b"Listening on", process.stderr, process.output)

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, pool=pool))
        response = await http.get(f"http://127.0.0.1:{port}/health", timeout=60)
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )
        health = json.loads(body)
        self.assertEqual(health["status"], "ok")
        self.assertEqual(await listening, f"http://127.0.0.1:{port}")
        self.assertIn(b"--listen systemd:domain=INET:name=ccrouter", process.stderr)


class _Recorder:
    """
    Stands in for C{subprocess.run}: records commands, answers with
    C{status}.
    """

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str], environ: Mapping[str, str]) -> Outcome:
        self.commands.append(list(command))
        return Outcome(self.status, "" if self.status == 0 else "it went wrong")


class InstallTests(SynchronousTestCase):
    """
    C{ccrouter service install | uninstall} in a temporary home.
    """

    def setUp(self) -> None:
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(parents=True)
        self.environ = {
            "HOME": str(self.home),
            "CCROUTER_HOME": str(self.home / "cc"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "Z_AI_API_KEY": "zai-secret",
        }
        self.units = self.home / ".config" / "systemd" / "user"

    def fakeSystemctl(self) -> None:
        """
        Put a C{systemctl} on C{PATH}, as there is wherever systemd is; the
        injected runner answers for it, so it never runs.
        """
        bin = self.home / "bin"
        bin.mkdir()
        (bin / "systemctl").write_text("#!/bin/sh\nexit 99\n")
        (bin / "systemctl").chmod(0o755)
        self.environ["PATH"] = str(bin)

    def ccrouter(self, *argv: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        status = main(["service", *argv], self.environ, out, err)
        return status, out.getvalue(), err.getvalue()

    def direct(
        self,
        action: str,
        socket: bool = False,
        noEnable: bool = False,
        platform: str = "linux",
        runner: _Recorder | None = None,
    ) -> tuple[int, str, str]:
        """
        Call L{servicemodule.service} with an injected platform and runner.
        """
        out, err = StringIO(), StringIO()
        context = Context(self.environ, resolvePaths(self.environ), out, err)
        arguments = argparse.Namespace(action=action, socket=socket, no_enable=noEnable)
        status = servicemodule.service(
            context, arguments, platform=platform, run=runner or _Recorder()
        )
        return status, out.getvalue(), err.getvalue()

    def test_installAndUninstall(self) -> None:
        status, out, err = self.ccrouter("install", "--no-enable")
        self.assertEqual((status, err), (0, ""))
        servicePath = self.units / "ccrouter.service"
        self.assertIn(f"wrote {servicePath}", out)
        self.assertIn("systemctl --user enable --now ccrouter.service", out)
        self.assertEqual(stat.S_IMODE(servicePath.stat().st_mode), 0o644)
        text = servicePath.read_text()
        self.assertIn(f"Environment=CCROUTER_HOME={self.home / 'cc'}", text)
        self.assertNotIn("zai-secret", text)
        self.assertFalse((self.units / "ccrouter.socket").exists())

        status, out, err = self.ccrouter("uninstall", "--no-enable")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"removed {servicePath}", out)
        self.assertEqual(os.listdir(self.units), [])
        # Again: nothing there is not an error.
        self.assertEqual(self.ccrouter("uninstall", "--no-enable")[0], 0)

    def test_installSocket(self) -> None:
        self.environ["CCROUTER_PORT"] = "8311"
        status, out, err = self.ccrouter("install", "--socket", "--no-enable")
        self.assertEqual((status, err), (0, ""))
        socketText = (self.units / "ccrouter.socket").read_text()
        self.assertIn("ListenStream=127.0.0.1:8311\n", socketText)
        self.assertIn(SOCKET_ENDPOINT, (self.units / "ccrouter.service").read_text())
        self.assertIn("systemctl --user enable --now ccrouter.socket", out)
        # Installing again without --socket removes the socket unit.
        self.assertEqual(self.ccrouter("install", "--no-enable")[0], 0)
        self.assertFalse((self.units / "ccrouter.socket").exists())
        self.assertNotIn("--listen", (self.units / "ccrouter.service").read_text())
        status, out, err = self.ccrouter("uninstall", "--no-enable")
        self.assertEqual(os.listdir(self.units), [])

    def test_xdgConfigHome(self) -> None:
        self.environ["XDG_CONFIG_HOME"] = str(self.home / "xdg")
        self.assertEqual(self.ccrouter("install", "--no-enable")[0], 0)
        self.assertTrue(
            (self.home / "xdg" / "systemd" / "user" / "ccrouter.service").exists()
        )

    def test_configInTheUnit(self) -> None:
        """
        An existing config file is passed by absolute path, and the
        variables it refers to are named with where to put them.
        """
        config = self.home / "cc" / "config.yaml"
        config.parent.mkdir()
        config.write_text(
            'default:\n  url: "https://api.anthropic.com"\nroutes:\n'
            '  - match: "claude-haiku"\n    upstream:\n'
            '      url: "https://api.z.ai/api/anthropic"\n'
            '      auth: {header: "x-api-key", value: "${Z_AI_API_KEY}"}\n'
        )
        status, out, err = self.ccrouter("install", "--no-enable")
        self.assertEqual((status, err), (0, ""))
        text = (self.units / "ccrouter.service").read_text()
        self.assertIn(f"--config {config}\n", text)
        self.assertNotIn("zai-secret", text)
        self.assertIn("Z_AI_API_KEY", out)
        self.assertIn(str(self.home / "cc" / "service.env"), out)

    def test_drainTimeoutFromTheConfig(self) -> None:
        """
        C13: the installed unit's C{TimeoutStopSec} is derived from the
        config's C{server.drain_timeout}, so systemd never kills a drain.
        """
        config = self.home / "cc" / "config.yaml"
        config.parent.mkdir()
        config.write_text(
            'default:\n  url: "https://api.anthropic.com"\n'
            "server:\n  drain_timeout: 2m\n"
        )
        status, _, err = self.ccrouter("install", "--no-enable")
        self.assertEqual((status, err), (0, ""))
        lines = (self.units / "ccrouter.service").read_text().splitlines()
        self.assertIn("TimeoutStopSec=135", lines)

    def test_invalidConfigRefused(self) -> None:
        config = self.home / "cc" / "config.yaml"
        config.parent.mkdir()
        config.write_text("server:\n  prot: 1\n")
        status, _, err = self.ccrouter("install", "--no-enable")
        self.assertEqual(status, 1)
        self.assertIn("config.yaml:2", err)
        self.assertFalse(self.units.exists())

    def test_systemctl(self) -> None:
        """
        With a working C{systemctl --user}, install reloads and enables the
        unit, and uninstall disables it and reloads.
        """
        self.fakeSystemctl()
        runner = _Recorder()
        status, out, err = self.direct("install", socket=True, runner=runner)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            runner.commands,
            [
                ["systemctl", "--user", "show-environment"],
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", "--now", "ccrouter.socket"],
            ],
        )
        self.assertIn("ran systemctl --user enable --now ccrouter.socket: ok", out)

        runner = _Recorder()
        status, out, err = self.direct("install", runner=runner)
        self.assertEqual(status, 0)
        self.assertEqual(
            runner.commands[1:],
            [
                [
                    "systemctl",
                    "--user",
                    "disable",
                    "--now",
                    "ccrouter.socket",
                    "ccrouter.service",
                ],
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", "--now", "ccrouter.service"],
            ],
        )

        runner = _Recorder()
        status, out, err = self.direct("uninstall", runner=runner)
        self.assertEqual(status, 0)
        self.assertEqual(
            runner.commands[1:],
            [
                ["systemctl", "--user", "disable", "--now", "ccrouter.service"],
                ["systemctl", "--user", "daemon-reload"],
            ],
        )
        self.assertEqual(os.listdir(self.units), [])

    def test_noUserBus(self) -> None:
        """
        When C{systemctl --user} does not work, the files are written and
        the commands to run are printed.
        """
        self.fakeSystemctl()
        runner = _Recorder(status=1)
        status, out, err = self.direct("install", runner=runner)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(runner.commands, [["systemctl", "--user", "show-environment"]])
        self.assertIn("did not run systemctl (systemctl --user does not work", out)
        self.assertIn("  systemctl --user daemon-reload", out)
        self.assertTrue((self.units / "ccrouter.service").exists())

    def test_noSystemctl(self) -> None:
        self.environ["PATH"] = str(self.home / "empty")
        runner = _Recorder()
        status, out, _ = self.direct("install", runner=runner)
        self.assertEqual(status, 0)
        self.assertEqual(runner.commands, [])
        self.assertIn("systemctl is not installed", out)

    def test_enableFails(self) -> None:
        self.fakeSystemctl()

        class Failing(_Recorder):
            def __call__(
                self, command: Sequence[str], environ: Mapping[str, str]
            ) -> Outcome:
                super().__call__(command, environ)
                return Outcome(1 if "enable" in command else 0, "no such unit")

        status, out, _ = self.direct("install", runner=Failing())
        self.assertEqual(status, 1)
        self.assertIn("FAILED (exit status 1): no such unit", out)

    def test_launchd(self) -> None:
        """
        On macOS, install writes the agent plist and bootstraps it;
        uninstall boots it out and removes it.
        """
        runner = _Recorder()
        status, _, err = self.direct("install", platform="darwin", runner=runner)
        self.assertEqual((status, err), (0, ""))
        path = self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        agent = plistlib.loads(path.read_bytes())
        self.assertEqual(agent["Label"], LAUNCHD_LABEL)
        self.assertEqual(
            agent["ProgramArguments"], serverCommand(sys.executable, None, False)
        )
        self.assertEqual(
            agent["StandardOutPath"], str(self.home / "cc" / "service.log")
        )
        self.assertTrue((self.home / "cc").is_dir())
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)
        self.assertNotIn(b"zai-secret", path.read_bytes())
        self.assertEqual(
            runner.commands,
            [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(path)]],
        )

        runner = _Recorder()
        status, _out, err = self.direct("uninstall", platform="darwin", runner=runner)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            runner.commands,
            [["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]],
        )
        self.assertFalse(path.exists())

    def test_launchdNoEnable(self) -> None:
        runner = _Recorder()
        status, out, _ = self.direct(
            "install", noEnable=True, platform="darwin", runner=runner
        )
        self.assertEqual(status, 0)
        self.assertEqual(runner.commands, [])
        self.assertIn("launchctl bootstrap", out)
        status, _, _ = self.direct(
            "uninstall", noEnable=True, platform="darwin", runner=runner
        )
        self.assertEqual(status, 0)
        self.assertEqual(runner.commands, [])

    def test_socketOnMacOS(self) -> None:
        status, _, err = self.direct("install", socket=True, platform="darwin")
        self.assertEqual(status, 2)
        self.assertIn("--socket is for systemd", err)
