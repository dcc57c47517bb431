"""
The processes a load script runs: C{twistd -n ccrouter} and the mock
upstream, each pinned to its own CPU where the machine has two, each killed
with the script (at the end, on an exception, and by the kernel if the
script itself dies), and a 1 Hz sampler of the proxy's RSS, descriptors and
CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil
from attrs import frozen

REPOSITORY = Path(__file__).resolve().parent.parent
#: Where the proxy runs and where the mock upstream, the load generator and
#: the attackers run, on a machine with at least two CPUs.
PROXY_CPU = 0
LOAD_CPU = 1
_LISTENING = re.compile(r"listening on http://([0-9.]+):([0-9]+)")
_PR_SET_PDEATHSIG = 1
#: The CPUs this script may use, before it pins itself to one of them.
_CPUS = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else ()


def pinnable(cpu: int | None) -> bool:
    return cpu is not None and cpu in _CPUS and len(_CPUS) > 1


def pinSelf(cpu: int | None) -> bool:
    """
    Pin the calling process to C{cpu}, if the machine has it.
    """
    if not pinnable(cpu):
        return False
    assert cpu is not None
    os.sched_setaffinity(0, {cpu})
    return True


def raiseDescriptorLimit(wanted: int = 65536) -> int:
    """
    Raise this process's soft limit on open files as far as the hard limit
    allows (attack runs hold more than the usual 1024); returns it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _childSetup(cpu: int | None, descriptors: int | None) -> Callable[[], None]:
    pin = pinnable(cpu)

    def setup() -> None:
        # Runs in the child between fork and exec: die with the parent, so
        # a killed script never leaves a proxy or a mock behind.
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if pin:
            assert cpu is not None
            os.sched_setaffinity(0, {cpu})
        if descriptors is not None:
            raiseDescriptorLimit(descriptors)

    return setup


def childEnvironment(home: Path) -> dict[str, str]:
    """
    The repository first on the import path, no provider keys or ccrouter
    overrides inherited, and a private home.
    """
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_AUTH_TOKEN"))
        and not key.startswith(("CCROUTER_", "XDG_"))
        and key != "SSL_CERT_FILE"
    }
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ["PYTHONUNBUFFERED"] = "1"
    environ["HOME"] = str(home)
    return environ


def twistdCommand() -> list[str]:
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _spawnModule(
    module: str, arguments: list[str], directory: Path, cpu: int | None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """
    Start C{python -m benchmarks.<name>} pinned to C{cpu}, its standard
    error in C{<name>.log}; it reports on standard output, one JSON line at
    a time.
    """
    name = module.rsplit(".", 1)[-1]
    stderr = open(directory / f"{name}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=childEnvironment(directory),
        cwd=REPOSITORY,
        preexec_fn=_childSetup(cpu, 65536),
    )
    return process, stderr


async def _readLine(
    process: subprocess.Popen[bytes],
    directory: Path,
    name: str,
    problem: str,
    timeout: float,
) -> dict[str, Any]:
    """
    The next JSON line a child started by L{_spawnModule} reports.
    """
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(
        loop.run_in_executor(None, process.stdout.readline), timeout
    )
    if not line:
        raise RuntimeError(
            f"the {name} process {problem}:\n"
            + (directory / f"{name}.log").read_text(errors="replace")
        )
    result: dict[str, Any] = json.loads(line)
    return result


async def _stop(process: subprocess.Popen[bytes], grace: float) -> int | None:
    """
    SIGTERM, then SIGKILL after C{grace} seconds; the exit code (negative
    for a signal) or L{None} if it could not be reaped.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    return process.poll()


class ProxyChild:
    """
    One C{twistd -n ccrouter --config <directory>/config.yaml} on a free
    loopback port, its log in C{<directory>/proxy.log}.
    """

    def __init__(
        self,
        directory: Path,
        config: str,
        cpu: int | None = PROXY_CPU,
        descriptors: int | None = 65536,
        listen: str | None = "tcp:0:interface=127.0.0.1",
        environment: dict[str, str] | None = None,
    ) -> None:
        """
        @param listen: The endpoint to listen on, or L{None} for the one
            the config gives (C{server.host} and C{server.port}).
        @param environment: Set in the proxy's environment on top of
            L{childEnvironment} (C{SSL_CERT_FILE}, to trust a test CA).
        """
        self.directory = directory
        self.configPath = directory / "config.yaml"
        self.logPath = directory / "proxy.log"
        self.home = directory / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.writeConfig(config)
        self.pinned = pinnable(cpu)
        self._cpu = cpu
        self._descriptors = descriptors
        self.process: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.exitCode: int | None = None
        self._listen = listen
        self._environment = dict(environment or {})
        #: When L{spawn} started the process (monotonic ns).
        self.spawnedNs = 0

    @property
    def modeFile(self) -> Path:
        return self.directory / "mode"

    def writeConfig(self, text: str) -> None:
        """
        Replace the config at once (the proxy must never read half a file).
        """
        partial = self.configPath.with_suffix(".partial")
        partial.write_text(text)
        os.chmod(partial, 0o600)
        os.replace(partial, self.configPath)

    def writeMode(self, name: str) -> None:
        partial = self.modeFile.with_suffix(".partial")
        partial.write_text(name + "\n")
        os.replace(partial, self.modeFile)

    async def start(self, timeout: float = 30) -> None:
        self.spawn()
        await self.listening(timeout)

    def spawn(self) -> None:
        """
        Start the process; L{listening} waits until it listens.
        """
        command = [
            *twistdCommand(),
            "-n",
            "--pidfile=",
            "ccrouter",
            "--config",
            str(self.configPath),
            *([] if self._listen is None else ["--listen", self._listen]),
        ]
        self._log: IO[bytes] = open(self.logPath, "wb")
        self.spawnedNs = time.monotonic_ns()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=childEnvironment(self.home) | self._environment,
            cwd=self.directory,
            preexec_fn=_childSetup(self._cpu, self._descriptors),
        )

    async def listening(self, timeout: float = 30) -> None:
        """
        Wait for the log line that says where the proxy listens.
        """
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.logPath.read_text(errors="replace"))
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                return
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the proxy did not start:\n{self.logTail()}")

    def logTail(self, lines: int = 30) -> str:
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def hangup(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGHUP)

    async def stop(self, grace: float = 40) -> int | None:
        """
        SIGTERM (a graceful stop may drain for up to 30 s), then SIGKILL.
        """
        if self.process is None:
            return None
        if self.exitCode is None:
            self.exitCode = await _stop(self.process, grace)
            self._log.close()
        return self.exitCode


class MockChild:
    """
    The mock upstream (L{benchmarks.mock}) in its own process.
    """

    def __init__(
        self,
        directory: Path,
        cpu: int | None = LOAD_CPU,
        refuse: float = 0.0,
        seed: int = 1,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """
        @param tls: A PEM certificate and its PEM key, for a TLS listener
            beside the plain one (its port in L{tlsPort}).
        """
        self.directory = directory
        self._cpu = cpu
        self._arguments = ["--refuse", str(refuse), "--seed", str(seed)]
        if tls is not None:
            self._arguments += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.controlPort = 0
        #: The TLS listener's port, or 0 without one.
        self.tlsPort = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> None:
        self.process, self._stderr = _spawnModule(
            "benchmarks.mock", self._arguments, self.directory, self._cpu
        )
        ports = await _readLine(
            self.process, self.directory, "mock", "did not start", timeout
        )
        self.port = int(ports["upstream"])
        self.controlPort = int(ports["control"])
        self.tlsPort = int(ports.get("tls", 0))

    async def stop(self) -> None:
        if self.process is not None:
            await _stop(self.process, 5)
            self._stderr.close()


class AttackChild:
    """
    The hostile clients (L{benchmarks.attack}) in their own process: L{start}
    returns once every connection is open, L{stop} closes their standard
    input and returns what they saw.
    """

    def __init__(self, directory: Path, arguments: list[str], cpu: int | None) -> None:
        self.directory = directory
        self._arguments = arguments
        self._cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None
        return await _readLine(
            self.process, self.directory, "attack", "ended early", timeout
        )

    async def start(self, timeout: float = 60) -> dict[str, Any]:
        self.process, self._stderr = _spawnModule(
            "benchmarks.attack", self._arguments, self.directory, self._cpu
        )
        return await self._line(timeout)

    async def stop(self, timeout: float = 30) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        try:
            return await self._line(timeout)
        finally:
            await _stop(self.process, 5)
            self._stderr.close()

    async def kill(self) -> None:
        if self.process is not None:
            await _stop(self.process, 0)


@frozen
class Sample:
    elapsed: float
    phase: str
    rss: int
    fds: int
    cpu: float


class Sampler:
    """
    Samples a process once a second into a CSV file (and a list), tagged
    with the phase the script says it is in.
    """

    def __init__(self, pid: int, path: Path, interval: float = 1.0) -> None:
        self._process = psutil.Process(pid)
        self._path = path
        self._interval = interval
        self.phase = "start"
        self.samples: list[Sample] = []
        self._started = time.monotonic()
        self._file = open(path, "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(["elapsed_s", "phase", "rss_bytes", "fds", "cpu_s"])

    def sample(self) -> Sample | None:
        try:
            with self._process.oneshot():
                times = self._process.cpu_times()
                sample = Sample(
                    elapsed=round(time.monotonic() - self._started, 3),
                    phase=self.phase,
                    rss=self._process.memory_info().rss,
                    fds=self._process.num_fds(),
                    cpu=times.user + times.system,
                )
        except psutil.Error:
            return None
        self.samples.append(sample)
        self._csv.writerow(
            [sample.elapsed, sample.phase, sample.rss, sample.fds, round(sample.cpu, 3)]
        )
        self._file.flush()
        return sample

    async def run(self, stop: asyncio.Event) -> None:
        """
        Sample on a fixed schedule until C{stop} is set.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while not stop.is_set():
            self.sample()
            tick += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, start + tick * self._interval - loop.time())
                )

    def close(self) -> None:
        self._file.close()

    def inPhase(self, *phases: str) -> list[Sample]:
        return [sample for sample in self.samples if sample.phase in phases]

    def cpuSeconds(self) -> float:
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return float("nan")
        return float(times.user + times.system)


def machine() -> dict[str, Any]:
    """
    What the figures were measured on.
    """
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import twisted

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_mib": psutil.virtual_memory().total // 2**20,
        "python": sys.version.split()[0],
        "twisted": twisted.__version__,
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }
