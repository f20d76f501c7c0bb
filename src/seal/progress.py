"""Progress reporting seam: Rich bars on stderr for the CLI, silence for the library and tests."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: int = 1, info: str = "") -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> "contextmanager[Task]": ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1, info: str = "") -> None:
        pass


class NullReporter:
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


class RichReporter:
    """One Rich progress bar per phase (generation, training steps with loss, evaluation)."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, info="")

            class _Task:
                def advance(self, n: int = 1, info: str = "") -> None:
                    progress.update(tid, advance=n, info=info)

            yield _Task()

    def log(self, message: str) -> None:
        self.console.print(message)
