"""
The built wheel carries the twistd dropin the way Twisted's plugin system
needs it, and an installed copy makes C{twistd ccrouter} available.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.proxyprocess import REPOSITORY, twistdCommand


def build(directory: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(directory),
            str(REPOSITORY),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = directory.glob("ccrouter-*.whl")
    return wheel


class WheelTests(TestCase):
    timeout = 300

    async def test_wheelLayoutAndDiscovery(self) -> None:
        """
        The wheel has the dropin without any C{__init__.py} under
        C{twisted/} (which would shadow Twisted's own), the package data,
        and no tests; installed on its own into a directory, twistd finds the
        C{ccrouter} subcommand there.
        """
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        wheel = await deferToThread(build, work / "dist")
        names = set(zipfile.ZipFile(wheel).namelist())
        self.assertIn("twisted/plugins/ccrouter_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        for name in [
            "ccrouter/tap.py",
            "ccrouter/py.typed",
            "ccrouter/default-config.yaml",
        ]:
            self.assertIn(name, names)
        self.assertFalse([name for name in names if name.startswith("tests/")])

        target = work / "installed"
        await deferToThread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                str(wheel),
            ],
            check=True,
            capture_output=True,
        )
        environ = dict(os.environ, PYTHONPATH=str(target))
        probe = await deferToThread(
            subprocess.run,
            [
                sys.executable,
                "-c",
                "import os, twisted.plugins as p\n"
                "from twisted.plugin import getPlugins\n"
                "from twisted.application.service import IServiceMaker\n"
                "print([os.path.join(d, 'ccrouter_plugin.py') for d in p.__path__"
                " if os.path.exists(os.path.join(d, 'ccrouter_plugin.py'))])\n"
                "print(sorted(m.tapname for m in getPlugins(IServiceMaker)))\n",
            ],
            cwd=str(work),
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        )
        dropins, tapnames = probe.stdout.splitlines()
        self.assertIn(
            str(target / "twisted" / "plugins" / "ccrouter_plugin.py"), dropins
        )
        self.assertIn("'ccrouter'", tapnames)
        helpText = await deferToThread(
            subprocess.run,
            [*twistdCommand(), "ccrouter", "--help"],
            cwd=str(work),
            env=environ,
            capture_output=True,
            text=True,
        )
        self.assertEqual(helpText.returncode, 0, helpText.stderr)
        self.assertIn("--listen=", helpText.stdout)
