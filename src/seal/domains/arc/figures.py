"""`attempts.png` of an `seal arc eval` folder: a few tasks, each as one row of grids (its test
input, the expected output, then every method's attempt), so a reader sees what the model answered.

The tasks shown are the first ones (in the run's order) that some method solved, then the rest, at
most `rows`. A method's cell shows the attempt that matched, else its first attempt; its title says
solved, wrong (with the attempt's shape when it differs) or no answer.
"""

from __future__ import annotations

from pathlib import Path

from seal.core.plots import figure
from seal.domains.arc.grids import ArcTask, Grid, parse_grid, shape

# ARC's usual palette: 0 black, 1 blue, 2 red, 3 green, 4 yellow, 5 grey, 6 magenta, 7 orange, 8 sky, 9 maroon.
COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
FILE = "attempts.png"


def shown_attempt(trial: dict | None, expected: Grid) -> tuple[Grid | None, str]:
    """The grid to draw for one method on one task and the cell's title word."""
    if trial is None:
        return None, "not run"
    grids = []
    for text in trial.get("attempts") or []:
        try:
            grids.append(parse_grid(text))
        except ValueError:
            continue
    if expected in grids:
        return expected, "solved"
    if not grids:
        return None, "malformed self-edit" if trial.get("usable") is False else "no answer"
    first = grids[0]
    return first, "wrong" if shape(first) == shape(expected) else f"wrong {shape(first)[0]}x{shape(first)[1]}"


def pick_tasks(tasks: list[ArcTask], trials: list[dict], rows: int) -> list[ArcTask]:
    """Tasks with records, those some method solved first (each group in the run's order), at most `rows`."""
    ran = {t["task_id"] for t in trials}
    solved = {t["task_id"] for t in trials if t.get("reward")}
    have = [t for t in tasks if t.id in ran]
    return ([t for t in have if t.id in solved] + [t for t in have if t.id not in solved])[:rows]


def attempts_figure(path: Path, tasks: list[ArcTask], trials: list[dict], methods: list[str], rows: int = 4) -> Path | None:
    """Draw the figure; None (and no file) when no task has a record yet."""
    picked = pick_tasks(tasks, trials, rows)
    if not picked:
        return None
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(COLOURS)
    by_key = {(t["task_id"], t["method"]): t for t in trials}
    ncols = 2 + len(methods)
    with figure(path, ncols, (1.9 * ncols, 2.1 * len(picked)), nrows=len(picked)) as axes:
        for r, task in enumerate(picked):
            expected = task.test[0].output
            cells = [(task.test[0].input, f"{task.family or task.id}: input"), (expected, "expected")]
            for m in methods:
                grid, word = shown_attempt(by_key.get((task.id, m)), expected)
                cells.append((grid, f"{m}: {word}"))
            for c, (grid, title) in enumerate(cells):
                ax = axes[r * ncols + c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=8, color="green" if title.endswith("solved") else "black")
                if grid is None:
                    ax.set_facecolor("#f4f4f4")
                    continue
                ax.imshow([list(row) for row in grid], cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
                h, w = shape(grid)
                ax.set_xticks([x - 0.5 for x in range(1, w)], minor=True)
                ax.set_yticks([y - 0.5 for y in range(1, h)], minor=True)
                ax.grid(which="minor", color="#555555", linewidth=0.4)
                ax.tick_params(which="minor", length=0)
    return path
