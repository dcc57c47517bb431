# -*- test-case-name: tests.test_paths -*-
"""
Where ccrouter keeps its files, following the XDG base directory
conventions: the config (and the mode file and breaker state beside it)
under C{$XDG_CONFIG_HOME/ccrouter}, the pid file and logs under
C{$XDG_STATE_HOME/ccrouter}; C{CCROUTER_HOME} puts everything in one
directory and C{CCROUTER_CONFIG} names the config file.  Pure: the
environment is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from attrs import frozen

CONFIG_NAME = "config.yaml"


@frozen
class Paths:
    configFile: str
    configDirectory: str
    stateDirectory: str

    @property
    def pidFile(self) -> str:
        return os.path.join(self.stateDirectory, "ccrouter.pid")

    @property
    def addressFile(self) -> str:
        """
        Where the daemon C{start} left answers, as its environment said.
        """
        return os.path.join(self.stateDirectory, "ccrouter.address")

    @property
    def logFile(self) -> str:
        return os.path.join(self.stateDirectory, "ccrouter.log")

    @property
    def startupLog(self) -> str:
        """
        What the daemon writes before its log is set up (a traceback, a
        start-up error), for C{ccrouter start} to show.
        """
        return os.path.join(self.stateDirectory, "startup.log")

    @property
    def claudeSetupRecord(self) -> str:
        """
        What C{ccrouter setup claude} changed, for C{--undo}.
        """
        return os.path.join(self.stateDirectory, "claude-setup.json")


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def resolvePaths(environ: Mapping[str, str]) -> Paths:
    home = environ.get("CCROUTER_HOME")
    if home:
        home = os.path.abspath(os.path.expanduser(home))
        configDirectory = stateDirectory = home
    else:
        userHome = _home(environ)
        configBase = environ.get("XDG_CONFIG_HOME") or os.path.join(userHome, ".config")
        stateBase = environ.get("XDG_STATE_HOME") or os.path.join(
            userHome, ".local", "state"
        )
        configDirectory = os.path.join(configBase, "ccrouter")
        stateDirectory = os.path.join(stateBase, "ccrouter")
    configFile = environ.get("CCROUTER_CONFIG") or os.path.join(
        configDirectory, CONFIG_NAME
    )
    configFile = os.path.abspath(os.path.expanduser(configFile))
    return Paths(
        configFile=configFile,
        configDirectory=os.path.dirname(configFile),
        stateDirectory=stateDirectory,
    )
