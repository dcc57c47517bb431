# -*- test-case-name: tests.test_file_modes,tests.test_secrets -*-
"""
What the proxy's process does at start-up so that the keys it holds stay
its own: refuse a config others could rewrite, keep every file it creates
private, and (on Linux) make itself non-dumpable, so that other processes
of the same user cannot read its environment or memory through C{/proc}.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shlex
import stat
import sys
from collections.abc import Callable, Iterator, Mapping

from attrs import define
from twisted.logger import Logger

from ccrouter.config import Config, Upstream

_log = Logger()

#: C{CCROUTER_DUMPABLE=1} keeps the process dumpable, for a profiler or
#: debugger (py-spy, gdb) run as the same user.
DUMPABLE_VARIABLE = "CCROUTER_DUMPABLE"

#: From C{<linux/prctl.h>}.
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

#: What a secret is replaced with in an error body.
REDACTED = b"[redacted]"
#: Secrets shorter than this are not looked for by value in log lines: a
#: short string turns up in ordinary text.
MIN_SECRET_LENGTH = 8

Prctl = Callable[[int, int], int]


def _libcPrctl() -> Prctl | None:
    """
    C{prctl(2)} through ctypes, on Linux only.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.prctl
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int

    def prctl(option: int, argument: int) -> int:
        result = int(function(option, ctypes.c_ulong(argument), 0, 0, 0))
        if result < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        return result

    return prctl


def isDumpable(prctl: Prctl | None = None) -> bool | None:
    """
    Whether this process is dumpable, or L{None} where that cannot be asked.
    """
    prctl = prctl or _libcPrctl()
    if prctl is None:
        return None
    return prctl(PR_GET_DUMPABLE, 0) != 0


def makeNonDumpable(environ: Mapping[str, str], prctl: Prctl | None = None) -> str:
    """
    Clear the dumpable flag of this process: the kernel then makes its
    C{/proc/PID/environ}, C{mem}, C{maps} and C{fd} readable only by root,
    refuses C{ptrace} from processes of the same user, and writes no core
    dump.  Python's C{os.environ} cannot scrub C{/proc/PID/environ}, which
    shows the block the process started with; this protects it.

    @param environ: Where L{DUMPABLE_VARIABLE} may opt out.
    @param prctl: C{prctl(2)}, by default libc's on Linux.
    @return: What happened, for one log line (no secret in it).
    """
    if environ.get(DUMPABLE_VARIABLE, "") not in ("", "0"):
        return f"the process stays dumpable ({DUMPABLE_VARIABLE} is set)"
    prctl = prctl or _libcPrctl()
    if prctl is None:
        return "the process stays dumpable (no prctl on this system)"
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except OSError as e:
        return f"the process stays dumpable (prctl failed: {e.strerror})"
    return "the process is not dumpable"


def tightenUmask() -> int:
    """
    Take group and others out of the umask, so that whatever the process
    creates (the pid file twistd writes, logs, state) is private even when
    it was started under C{umask 022}.

    @return: The umask it had.
    """
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    return previous


def hardenProcess(environ: Mapping[str, str], prctl: Prctl | None = None) -> str:
    """
    Both of the above, for the process twistd runs (before it writes its pid
    file), with one log line saying whether the process is dumpable.

    @return: What L{makeNonDumpable} said.
    """
    tightenUmask()
    outcome = makeNonDumpable(environ, prctl)
    _log.info("{outcome}", outcome=outcome)
    return outcome


def _writers(mode: int) -> str:
    if mode & stat.S_IWGRP and mode & stat.S_IWOTH:
        return "its group and all other users"
    if mode & stat.S_IWOTH:
        return "all other users"
    return "its group"


def configFileProblem(path: str, uid: int | None = None) -> str | None:
    """
    Why the proxy must not start with the config file C{path}, or L{None}.

    A config says where requests (with the user's Anthropic login) and
    provider keys are sent: whoever can rewrite it can send them anywhere.
    So, as C{ssh} does for its own files, it must be owned by the user
    running the proxy (or root) and writable by nobody else.  That others
    can I{read} it matters only when it holds a key written in full, which
    L{ccrouter.config.permissionWarning} warns about.

    @param uid: The user the proxy runs as; by default the effective one.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        status = os.stat(path)
    except OSError:
        # Reading it already succeeded or failed with its own message.
        return None
    quoted = shlex.quote(path)
    if status.st_uid not in (uid, 0):
        return (
            f"ccrouter: refusing to start: {path} belongs to another user"
            f" (uid {status.st_uid}), who could change where your requests and"
            f" keys go; use a config of your own (uid {uid}), or"
            f" 'chown {uid} {quoted}'"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"ccrouter: refusing to start: {path} can be changed by"
            f" {_writers(mode)} (mode {mode:04o}), who could change where your"
            f" requests and keys go; run 'chmod 600 {quoted}'"
        )
    return None


def _upstreams(config: Config) -> Iterator[Upstream]:
    yield config.default
    yield from config.upstreams
    for route in config.routes:
        yield route.upstream
    for mode in config.modes:
        for route in mode.routes:
            yield route.upstream
        for target in mode.failover:
            for route in target.routes:
                yield route.upstream


def upstreamSecrets(upstream: Upstream) -> frozenset[str]:
    """
    The credential ccrouter adds for C{upstream}, as it may show up in
    text: the header's value, and the key alone without a C{Bearer }
    prefix.
    """
    if upstream.auth is None:
        return frozenset()
    value = upstream.auth.value.strip()
    found = {value}
    scheme, _, credential = value.partition(" ")
    if credential and scheme.lower() in ("bearer", "basic", "token"):
        found.add(credential.strip())
    return frozenset(value for value in found if len(value) >= MIN_SECRET_LENGTH)


def configSecrets(config: Config) -> frozenset[str]:
    """
    The secret values C{config} holds, to be looked for in anything
    written out: provider keys (with and without a C{Bearer } prefix) and
    the local token.
    """
    found: set[str] = set()
    for upstream in _upstreams(config):
        found |= upstreamSecrets(upstream)
    token = config.server.token
    if token and len(token) >= MIN_SECRET_LENGTH:
        found.add(token)
    return frozenset(found)


def withoutCredential(body: bytes, upstream: Upstream) -> bytes:
    """
    An upstream's error response C{body} with the credential ccrouter sent
    it taken out (also as JSON writes it with C{\\/}), for the client: a
    provider that echoes the key it refused (some put it in a 401's
    message) must not hand the client the key ccrouter holds for it.
    """
    for secret in upstreamSecrets(upstream):
        for written in {secret, secret.replace("/", "\\/")}:
            body = body.replace(written.encode("utf-8"), REDACTED)
    return body


@define
class LiveSecrets:
    """
    The secrets of whatever config C{current} returns now, worked out again
    only when the config changes (a reload): for L{ccrouter.logs.redact},
    which asks on every log line.
    """

    current: Callable[[], Config]
    _config: Config | None = None
    _secrets: frozenset[str] = frozenset()

    def __call__(self) -> frozenset[str]:
        config = self.current()
        if config is not self._config:
            self._config = config
            self._secrets = configSecrets(config)
        return self._secrets
