"""A seeded generator of small-grid ARC-like tasks, by family, with fixed train/eval splits.

Real ARC tasks are mostly out of reach of a 135M model; these families give a ladder of difficulty
that the model can climb on a CPU. Each family is a rule from input grid to output grid; a task
draws its own parameters (colours, direction, size) from a seed derived from (split, index), so
`generated:train` and `generated:eval` are the same on every machine and never share a task
(checked by content in `select_tasks`). Grids are 3x3 to 10x10; 3-5 demonstrations and one test.
"""

from __future__ import annotations

import random
from typing import Callable

from seal.core.runtime import derive_seed
from seal.domains.arc.augment import colour_permutation, forward
from seal.domains.arc.grids import ArcTask, Grid, Pair

SPLIT_SIZE = 40  # tasks per split: 4 of each family


def _random_grid(rng: random.Random, h: int, w: int, density: float = 0.5, colours=range(1, 10)) -> Grid:
    colours = list(colours)
    return tuple(tuple(rng.choice(colours) if rng.random() < density else 0 for _ in range(w)) for _ in range(h))


def _size(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    return rng.randint(lo, hi), rng.randint(lo, hi)


# Each family: rng -> (make_input(rng) -> grid, rule(grid) -> grid). Per-task parameters are drawn first.

def recolour(rng):
    perm = colour_permutation(rng)
    h, w = _size(rng, 3, 6)
    return (lambda r: _random_grid(r, h, w, 0.6)), (lambda g: forward(perm, g))


def flip(rng):
    way = rng.choice(["flip_h", "flip_v"])
    h, w = _size(rng, 3, 6)
    return (lambda r: _random_grid(r, h, w)), (lambda g: forward(way, g))


def rotate(rng):
    way = rng.choice(["rot90", "rot180", "rot270"])
    h, w = _size(rng, 3, 6)
    return (lambda r: _random_grid(r, h, w)), (lambda g: forward(way, g))


def transpose(rng):
    h, w = _size(rng, 3, 6)
    return (lambda r: _random_grid(r, h, w)), (lambda g: forward("transpose", g))


def crop(rng):
    """A filled rectangle on an empty grid; the output is the rectangle."""
    h, w = _size(rng, 5, 10)

    def make(r):
        bh, bw = r.randint(1, min(3, h - 1)), r.randint(1, min(3, w - 1))
        top, left = r.randint(0, h - bh), r.randint(0, w - bw)
        block = _random_grid(r, bh, bw, 1.0)
        return tuple(tuple(block[i - top][j - left] if top <= i < top + bh and left <= j < left + bw else 0
                           for j in range(w)) for i in range(h))

    def rule(g):
        rows = [i for i, r in enumerate(g) if any(r)]
        cols = [j for j in range(len(g[0])) if any(r[j] for r in g)]
        return tuple(tuple(g[i][j] for j in range(cols[0], cols[-1] + 1)) for i in range(rows[0], rows[-1] + 1))

    return make, rule


def tile(rng):
    """The input repeated 2 times across, down, or both."""
    across, down = rng.choice([(2, 1), (1, 2), (2, 2)])
    h, w = _size(rng, 2, 4) if (across, down) == (2, 2) else _size(rng, 3, 5)
    return (lambda r: _random_grid(r, h, w)), (lambda g: tuple(tuple(row * across) for _ in range(down) for row in g))


def gravity(rng):
    """Every coloured cell falls to the bottom of its column."""
    h, w = _size(rng, 3, 7)

    def rule(g):
        cols = []
        for j in range(len(g[0])):
            cells = [g[i][j] for i in range(len(g)) if g[i][j]]
            cols.append([0] * (len(g) - len(cells)) + cells)
        return tuple(tuple(cols[j][i] for j in range(len(cols))) for i in range(len(g)))

    return (lambda r: _random_grid(r, h, w, 0.35)), rule


def count_to_bar(rng):
    """Count the cells of one colour; the output is a one-row bar of that many cells."""
    colour = rng.randint(1, 9)
    h, w = _size(rng, 3, 6)

    def make(r):
        while True:
            g = _random_grid(r, h, w, 0.3, colours=[colour])
            if 1 <= sum(v > 0 for row in g for v in row) <= 10:
                return g

    return make, (lambda g: ((colour,) * sum(v > 0 for row in g for v in row),))


def scale(rng):
    """Every cell becomes a 2x2 block."""
    h, w = _size(rng, 2, 4)
    return (lambda r: _random_grid(r, h, w, 0.6)), (lambda g: forward("scale:2", g))


def fill_background(rng):
    """Empty cells take one colour; coloured cells stay."""
    colour = rng.randint(1, 9)
    h, w = _size(rng, 3, 6)
    others = [c for c in range(1, 10) if c != colour]
    return (lambda r: _random_grid(r, h, w, 0.4, others)), (lambda g: tuple(tuple(v or colour for v in row) for row in g))


FAMILIES: dict[str, Callable] = {f.__name__.replace("_", "-"): f for f in (
    recolour, flip, rotate, transpose, crop, tile, gravity, count_to_bar, scale, fill_background)}


def generate_task(family: str, seed: int, task_id: str, n_demos: int | None = None) -> ArcTask:
    """One task of `family`: 3-5 demonstrations (distinct inputs) and one test pair."""
    rng = random.Random(seed)
    make, rule = FAMILIES[family](rng)
    n = n_demos or rng.randint(3, 5)
    inputs: list[Grid] = []
    for _ in range(1000):
        if len(inputs) == n + 1:
            break
        g = make(rng)
        if g not in inputs and rule(g) != g:  # an identity pair shows nothing about the rule
            inputs.append(g)
    else:  # pragma: no cover - every family draws from many grids
        raise RuntimeError(f"family {family} could not draw {n + 1} distinct inputs")
    pairs = [Pair(g, rule(g)) for g in inputs]
    return ArcTask(task_id, pairs[:n], pairs[n:], family=family)


def generated_split(split: str, n: int | None = None) -> list[ArcTask]:
    """`generated:train` / `generated:eval`: SPLIT_SIZE tasks, families in turn (a fixed list)."""
    names = list(FAMILIES)
    return [generate_task(names[i % len(names)], derive_seed("arc-generated", split, i), f"gen-{split}-{i:03d}-{names[i % len(names)]}")
            for i in range(n if n is not None else SPLIT_SIZE)]
