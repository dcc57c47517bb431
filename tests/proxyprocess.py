"""
Runs C{twistd -n ccrouter} as a real child process for end-to-end tests.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

REPOSITORY = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening on (http://[^\s]+)")


def twistdCommand() -> list[str]:
    """
    The twistd that belongs to the Python running the tests.
    """
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


#: How each runner starts ccrouter in the foreground.
RUNNERS = {
    "twistd": lambda: [*twistdCommand(), "-n", "--pidfile=", "ccrouter"],
    "twist": lambda: [sys.executable, "-m", "twisted", "--log-format=text", "ccrouter"],
    "serve": lambda: [
        sys.executable,
        "-c",
        "from ccrouter.cli import entryPoint; entryPoint()",
        "serve",
    ],
}


def childEnvironment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """
    The environment for a child: the repository first on the import path (so
    the code under test is what runs, however it was installed), no inherited
    provider keys, and unbuffered output.
    """
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_AUTH_TOKEN")) and key != "SSL_CERT_FILE"
    }
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(extra or {})
    return environ


class _Collector(ProcessProtocol):
    def __init__(self, proxy: ProxyProcess) -> None:
        self._proxy = proxy

    def outReceived(self, data: bytes) -> None:
        self._proxy.stdout += data
        self._proxy._checkListening()

    def errReceived(self, data: bytes) -> None:
        self._proxy.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self._proxy._ended(reason)


class ProxyProcess:
    """
    One C{twistd -n ccrouter} child.  L{start} fires with the base URL once
    the proxy logs that it listens; L{stop} sends SIGTERM and waits.
    """

    def __init__(
        self,
        arguments: list[str],
        environ: dict[str, str] | None = None,
        cwd: str | None = None,
        runner: str = "twistd",
    ) -> None:
        self.command = [*RUNNERS[runner](), *arguments]
        self.arguments = arguments
        self.environ = childEnvironment(environ)
        self.cwd = cwd
        self.stdout = b""
        self.stderr = b""
        self.url: str | None = None
        self.exitCode: int | None = None
        self.exitSignal: int | None = None
        self.pid: int | None = None
        self._listening: defer.Deferred[str] = defer.Deferred()
        self.exited: defer.Deferred[int | None] = defer.Deferred()

    def start(self, timeout: float = 30) -> defer.Deferred[str]:
        command = self.command
        transport = reactor.spawnProcess(
            _Collector(self), command[0], command, env=self.environ, path=self.cwd
        )
        self.pid = transport.pid
        self._transport = transport
        return self._listening.addTimeout(timeout, reactor)

    def run(self, timeout: float = 30) -> defer.Deferred[int | None]:
        """
        Run a child that is expected to exit by itself; fires with its exit
        code.
        """
        self._listening.addErrback(lambda failure: None)
        command = self.command
        self._transport = reactor.spawnProcess(
            _Collector(self), command[0], command, env=self.environ, path=self.cwd
        )
        return self.exited.addTimeout(timeout, reactor)

    def _checkListening(self) -> None:
        if self._listening.called:
            return
        match = _LISTENING.search(self.stdout)
        if match:
            self.url = match.group(1).decode()
            self._listening.callback(self.url)

    def _ended(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.exitCode = 0
        elif reason.check(ProcessTerminated):
            self.exitCode = reason.value.exitCode
            self.exitSignal = reason.value.signal
        if not self._listening.called:
            self._listening.errback(
                RuntimeError(
                    f"twistd exited ({self.exitCode}) before listening:\n"
                    f"{self.stdout.decode(errors='replace')}\n"
                    f"{self.stderr.decode(errors='replace')}"
                )
            )
        if not self.exited.called:
            self.exited.callback(self.exitCode)

    def rssKiB(self) -> int:
        assert self.pid is not None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    async def stop(self) -> None:
        if self.exited.called:
            return
        self._transport.signalProcess("TERM")
        try:
            await self.exited.addTimeout(15, reactor)
        except defer.TimeoutError:
            os.kill(self._transport.pid, signal.SIGKILL)
            raise

    @property
    def output(self) -> bytes:
        return self.stdout + self.stderr
