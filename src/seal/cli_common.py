"""Shared pieces of the command line: consoles, common options, one-line error handling."""

from __future__ import annotations

import functools
import os

import typer
from rich.console import Console
from rich.text import Text

from .runtime import SealError


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

StoreOpt = typer.Option(None, "--store", help="Knowledge store folder [env SEAL_HOME; default: user data dir].")
ModelOpt = typer.Option(None, "--model", help="Local Hugging Face model folder [default: embedded SmolLM2-135M-Instruct].")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
MinFaithOpt = typer.Option(
    None, "--min-faithfulness", min=0.0, max=1.0,
    help="Drop self-edit lines whose names, numbers and long words occur in the passage less than this share (1.0: all must).",
)


def cli_errors(fn):
    """Turn SealError into one line on stderr and exit status 2; Ctrl-C into status 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SealError as e:
            err.print(Text.assemble(("error:", "red"), f" {e}"), soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)

    return wrapper
