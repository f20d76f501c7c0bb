"""The `seal` command line (Typer): `commands` holds the app and the everyday commands; `bench`,
`train` and `arc` their command groups."""

from seal.cli.commands import app, main

__all__ = ["app", "main"]
