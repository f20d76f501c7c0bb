"""Invertible grid augmenters, named by strings so that records can say which one was used.

An augmenter is a spec: one step, or steps joined by `+` (applied left to right).
  geometric: identity, rot90, rot180, rot270 (clockwise), flip_h (left-right), flip_v (up-down),
             transpose, anti_transpose: the 8 symmetries of the square;
  colours:PPPPPPPPPP  a permutation of the colours 0-9 (digit i is the new colour of colour i);
  scale:K             every cell becomes a KxK block (a size change);
  repeat              identity on grids: marks a pseudo-task whose demonstrations were reordered.
`forward` augments a grid, `inverse` maps it back; `inverse(spec, forward(spec, g)) == g` for every
grid (tests/test_arc_grids.py). An inverse that cannot apply (a model's answer that is not made of
KxK blocks) raises ValueError: that answer then has no vote.
"""

from __future__ import annotations

import random

from seal.domains.arc.grids import Grid, Pair

GEOMETRIC = ("identity", "rot90", "rot180", "rot270", "flip_h", "flip_v", "transpose", "anti_transpose")
_GEO_INVERSE = {"rot90": "rot270", "rot270": "rot90"}  # every other symmetry is its own inverse


def _geometric(name: str, g: Grid) -> Grid:
    if name == "identity":
        return g
    if name == "flip_h":
        return tuple(tuple(reversed(r)) for r in g)
    if name == "flip_v":
        return tuple(reversed(g))
    if name == "transpose":
        return tuple(zip(*g))
    if name == "rot90":
        return tuple(zip(*reversed(g)))
    if name == "rot180":
        return _geometric("flip_v", _geometric("flip_h", g))
    if name == "rot270":
        return tuple(reversed(tuple(zip(*g))))
    if name == "anti_transpose":
        return _geometric("rot180", _geometric("transpose", g))
    raise ValueError(f"unknown augmenter {name!r}")


def _permutation(arg: str) -> list[int]:
    if len(arg) != 10 or sorted(arg) != list("0123456789"):
        raise ValueError(f"colours:{arg} is not a permutation of 0-9")
    return [int(c) for c in arg]


def _scale_factor(arg: str) -> int:
    if not arg.isdigit() or not 2 <= int(arg) <= 5:
        raise ValueError(f"scale:{arg}: the factor is 2-5")
    return int(arg)


def _step(step: str, g: Grid, inverse: bool) -> Grid:
    kind, _, arg = step.partition(":")
    if kind == "repeat" and not arg:
        return g
    if kind == "colours":
        perm = _permutation(arg)
        if inverse:
            perm = [perm.index(c) for c in range(10)]
        return tuple(tuple(perm[v] for v in r) for r in g)
    if kind == "scale":
        k = _scale_factor(arg)
        if not inverse:
            return tuple(tuple(v for v in r for _ in range(k)) for r in g for _ in range(k))
        h, w = len(g), len(g[0])
        if h % k or w % k:
            raise ValueError(f"a {h}x{w} grid is not made of {k}x{k} blocks")
        small = tuple(tuple(g[i][j] for j in range(0, w, k)) for i in range(0, h, k))
        if _step(step, small, False) != g:
            raise ValueError(f"the grid is not made of uniform {k}x{k} blocks")
        return small
    if not arg and kind in GEOMETRIC:
        return _geometric(_GEO_INVERSE.get(kind, kind) if inverse else kind, g)
    raise ValueError(f"unknown augmenter {step!r}")


def steps(spec: str) -> list[str]:
    return spec.split("+")


def forward(spec: str, g: Grid) -> Grid:
    for s in steps(spec):
        g = _step(s, g, inverse=False)
    return g


def inverse(spec: str, g: Grid) -> Grid:
    for s in reversed(steps(spec)):
        g = _step(s, g, inverse=True)
    return g


def check(spec: str) -> str:
    """`spec` if every step is a known augmenter (ValueError otherwise)."""
    forward(spec, ((0, 1), (2, 3)))
    return spec


def augment_pairs(spec: str, pairs: list[Pair]) -> list[Pair]:
    """The same augmenter on every input and output: a consistent task (the rule is conjugated)."""
    return [Pair(forward(spec, p.input), forward(spec, p.output)) for p in pairs]


def colour_permutation(rng: random.Random, keep_background: bool = True) -> str:
    """A random colour permutation spec; colour 0 (ARC's usual background) stays 0 by default."""
    colours = list(range(1, 10)) if keep_background else list(range(10))
    rng.shuffle(colours)
    perm = ([0] if keep_background else []) + colours
    return "colours:" + "".join(str(c) for c in perm)


def max_side(pairs: list[Pair]) -> int:
    return max(max(len(g), len(g[0])) for p in pairs for g in (p.input, p.output))
