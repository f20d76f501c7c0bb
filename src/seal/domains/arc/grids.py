"""ARC grids and tasks as values, and their compact text form.

A grid is a tuple of rows of ints 0-9 (immutable, so answers can be counted in a vote). Its text
is one line of digits per row, without separators: a 10x10 grid is 10 lines of 10 digits, which
keeps a task with five demonstrations well inside a small model's context. A task prompt lists the
demonstrations as `input:` / `output:` blocks and ends with the test input and `output:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seal.core.runtime import sha256_text

Grid = tuple[tuple[int, ...], ...]
MAX_SIDE = 30  # ARC's largest grid


def as_grid(rows) -> Grid:
    """A grid from nested lists; ValueError unless it is a non-empty rectangle of ints 0-9."""
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError("a grid is a non-empty list of rows")
    out = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or not row:
            raise ValueError("a grid row is a non-empty list")
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9 for v in row):
            raise ValueError(f"grid cells are ints 0-9, got row {list(row)!r}")
        out.append(tuple(row))
    if len({len(r) for r in out}) != 1:
        raise ValueError("grid rows differ in length")
    if len(out) > MAX_SIDE or len(out[0]) > MAX_SIDE:
        raise ValueError(f"grid larger than {MAX_SIDE}x{MAX_SIDE}")
    return tuple(out)


def shape(grid: Grid) -> tuple[int, int]:
    return len(grid), len(grid[0])


def grid_text(grid: Grid) -> str:
    return "\n".join("".join(str(v) for v in row) for row in grid)


def parse_grid(text: str) -> Grid:
    """The grid at the start of `text` (a model's answer): digit lines up to the first line that is
    not one (blank line, `input:`, chatter). ValueError when there is no rectangular grid there."""
    rows = []
    for line in text.strip("\n").split("\n"):
        line = line.strip()
        if not line or not line.isdigit() or not line.isascii():
            break
        rows.append([int(c) for c in line])
    if not rows:
        raise ValueError("no grid in the answer")
    return as_grid(rows)


@dataclass(frozen=True)
class Pair:
    input: Grid
    output: Grid


@dataclass
class ArcTask:
    """Demonstrations (`train`), test pairs (`test`; the first is the one answered) and, for a
    generated task, its family."""

    id: str
    train: list[Pair]
    test: list[Pair]
    family: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Content identity (ignores the id): refuses the same task in a train and an eval split."""
        return sha256_text(task_prompt(self.train, self.test[0].input) + grid_text(self.test[0].output))


def pair_text(pair: Pair) -> str:
    return f"input:\n{grid_text(pair.input)}\noutput:\n{grid_text(pair.output)}\n"


def task_prompt(demos: list[Pair], query: Grid) -> str:
    """Demonstrations, then the query input; the answer follows `output:`."""
    return "".join(pair_text(p) + "\n" for p in demos) + f"input:\n{grid_text(query)}\noutput:\n"


def answer_text(grid: Grid) -> str:
    return grid_text(grid) + "\n"
