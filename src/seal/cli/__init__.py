"""The `seal` command line (Typer): `commands` holds the app and the everyday commands; `bench`,
`train` and `arc` their command groups."""

import sys

try:
    from seal.cli.commands import app, main
except KeyboardInterrupt:  # Ctrl-C while the command line's modules load, before main() can catch it
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

__all__ = ["app", "main"]
