"""Global options of the `seal` command: --version and --verbose (fresh processes, no model)."""

import subprocess
import sys
from importlib.metadata import version

from conftest import run_seal

import seal


def test_version_prints_the_installed_package_version():
    r = run_seal("--version", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"seal {version('seal')}\n" == f"seal {seal.__version__}\n"


# A command that warns the way transformers and peft do; it is added to the real app in a fresh process.
_WARN = """
import warnings
from seal.cli import commands as cli

@cli.app.command("warn")
def _warn():
    warnings.warn("a library warning", FutureWarning)

cli.main()
"""


def _run_warn(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WARN, *options, "warn"], capture_output=True, text=True, timeout=120)


def test_library_warnings_are_silenced_unless_verbose():
    quiet, verbose = _run_warn(), _run_warn("--verbose")
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "a library warning" not in quiet.stderr
    assert "FutureWarning: a library warning" in verbose.stderr
