"""Shared pieces of the command line: consoles, common options, one-line error handling."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from seal.core.runtime import SealError


def _console(**kw) -> Console:
    """A console that prints text as it is (no Rich markup: a question, answer, title or path with
    square brackets must not vanish or raise) and that, writing to a file or pipe, lays tables out
    160 columns wide (not Rich's 80, which squeezes a ten-column table into truncated cells);
    COLUMNS still wins. Styles go in as `Text` or `style=`."""
    console = Console(highlight=False, markup=False, **kw)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


out = _console()
err = _console(stderr=True)

# Typer's "rich" help mode reads help texts as Rich markup and silently drops "[default: all]" or the
# "[ray]" of "seal[ray]" as unknown tags; markdown mode keeps square brackets.
HELP_MARKUP = "markdown"

def finite(value):
    """Typer callback: refuse NaN and infinities at parse time (Python's float() accepts 'nan', 'inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def store_path(value: str) -> Path:
    """Typer parser of --store: an empty value would silently make the current folder a store."""
    if not value.strip():
        raise typer.BadParameter("an empty path; name the store's folder (or leave --store out for the default)")
    return Path(value)


StoreOpt = typer.Option(None, "--store", parser=store_path, metavar="<path>",
                        help="Knowledge store folder [env SEAL_HOME; default: user data dir].")
ModelOpt = typer.Option(None, "--model", help="Local Hugging Face model folder [default: embedded SmolLM2-135M-Instruct].")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
MinFaithOpt = typer.Option(
    None, "--min-faithfulness", min=0.0, max=1.0, callback=finite,
    help="Drop self-edit lines whose names, numbers and long words occur in the passage less than this share (1.0: all must).",
)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def cli_errors(fn):
    """Every failure is one line on stderr, never a traceback. Exit status: 2 for what the user's
    input caused (bad options, files, folders), 1 for a failure at run time (a damaged or busy
    store, a diverged training, a remote endpoint that failed, a file system that refused a write),
    130 for Ctrl-C (whose one line `commands.main()` prints, as it also catches it outside a command)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SealError as e:
            err.print(Text.assemble(("error:", "red"), f" {_one_line(e)}"), soft_wrap=True)
            raise typer.Exit(e.exit_code)
        except OSError as e:  # permission denied, disk full, read-only file system...
            where = f": {e.filename}" if e.filename else ""
            err.print(Text.assemble(("error:", "red"), f" {e.strerror or _one_line(e)}{where}"), soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:  # commands.main() prints the one line
            raise typer.Exit(130)

    return wrapper
