"""Progress reporting seam: Rich bars on stderr for the CLI, silence for the library and tests.

When stderr is not a terminal (`nohup ... > run.log`, a CI log, a Ray job), Rich draws a bar only
when it ends, so an hour of trials would print nothing; there the CLI writes a plain line per
phase instead: when it starts, at most once a minute while it runs, and when it ends.
"""

from __future__ import annotations

import time
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


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _LineTask:
    """A phase reported as plain lines: `description: done/total, elapsed, ~left, info`."""

    def __init__(self, write, description: str, total: int | None, every: float, now=time.monotonic):
        self.write, self.description, self.total, self.every, self.now = write, description, total, every, now
        self.done, self.info, self.shown = 0, "", None  # shown: the count of the last line written
        self.start = self.last = now()
        self.write(f"{description}: started" + (f", {total} to do" if total is not None else ""))

    def line(self) -> str:
        elapsed = self.now() - self.start
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.description}: {count}", f"{_clock(elapsed)} elapsed"]
        if self.total and 0 < self.done < self.total:
            parts.append(f"~{_clock(elapsed / self.done * (self.total - self.done))} left")
        return ", ".join(parts + ([self.info] if self.info else []))

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        self.info = info or self.info
        if self.now() - self.last >= self.every:
            self.last, self.shown = self.now(), self.done
            self.write(self.line())

    def close(self) -> None:
        if self.shown != self.done:  # the last advance may have written the final count already
            self.write(self.line())


class RichReporter:
    """One Rich progress bar per phase (generation, training steps with loss, evaluation); plain
    lines at most every `line_every` seconds when the console is not a terminal."""

    def __init__(self, console=None, line_every: float = 60.0):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.line_every = line_every

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        if not self.console.is_terminal:
            line_task = _LineTask(lambda text: self.console.print(text, markup=False, highlight=False, soft_wrap=True),
                                  description, total, self.line_every)
            try:
                yield line_task
            finally:  # the last count reaches the log even when the phase fails
                line_task.close()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}", markup=False),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, info="")

            class _Task:
                def advance(self, n: int = 1, info: str = "") -> None:
                    progress.update(tid, advance=n, info=info)

            yield _Task()

    def log(self, message: str) -> None:
        self.console.print(message, markup=False)
