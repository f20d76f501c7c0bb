"""Loading ARC tasks: ARC-AGI-1 files, the paper's filtered 1B sets, generated families, or a path;
and the context-budget check that reports tasks too long for the model instead of dropping them.

Specs:
  arc-1b:train / arc-1b:eval   the paper's 12 training / 10 evaluation tasks (filtered for Llama-3.2-1B)
  arc-1:train / arc-1:eval     all 400 ARC-AGI-1 training / evaluation tasks
  generated:train / generated:eval   seeded small-grid families (see families.py)
  PATH                         an ARC challenges JSON ({id: {"train": [...], "test": [...]}}); test
                               outputs come from the pairs themselves or a sibling *solutions*.json
The ARC files are read at run time from $SEAL_DATA/few-shot/data (default ../shared/data/seal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seal.domains.knowledge.data import seal_data_dir
from seal.core.runtime import UsageError
from seal.domains.arc.families import generated_split
from seal.domains.arc.grids import ArcTask, Pair, as_grid, task_prompt, answer_text

ARC_FILES = {
    "arc-1b:train": "arc-agi_training_{}_filtered_1B_training_set.json",
    "arc-1b:eval": "arc-agi_evaluation_{}_filtered_1B_eval_set.json",
    "arc-1:train": "arc-agi_training_{}.json",
    "arc-1:eval": "arc-agi_evaluation_{}.json",
}
GENERATED = ("generated:train", "generated:eval")
KNOWN = (*ARC_FILES, *GENERATED)


def arc_data_dir() -> Path:
    return seal_data_dir() / "few-shot" / "data"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read ARC file {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"{path} is not JSON: {e}") from None


def parse_tasks(challenges: dict, solutions: dict | None, source: str) -> list[ArcTask]:
    """ARC JSON -> tasks; every grid is validated (UsageError naming the task)."""
    if not isinstance(challenges, dict):
        raise UsageError(f"{source}: expected an object of tasks by id")
    tasks = []
    for tid, t in challenges.items():
        try:
            train = [Pair(as_grid(p["input"]), as_grid(p["output"])) for p in t["train"]]
            tests = []
            for i, p in enumerate(t["test"]):
                out = p.get("output") if isinstance(p, dict) and "output" in p else (solutions or {}).get(tid, [None] * (i + 1))[i]
                if out is None:
                    raise KeyError(f"no output for test {i}")
                tests.append(Pair(as_grid(p["input"]), as_grid(out)))
            if not train or not tests:
                raise ValueError("no demonstrations or no test")
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UsageError(f"{source}: task {tid}: {e}") from None
        tasks.append(ArcTask(str(tid), train, tests))
    return tasks


def load_tasks(spec: str) -> list[ArcTask]:
    if spec in GENERATED:
        return generated_split(spec.split(":")[1])
    if spec in ARC_FILES:
        folder = arc_data_dir()
        chal, sol = (folder / ARC_FILES[spec].format(kind) for kind in ("challenges", "solutions"))
        if not chal.is_file():
            raise UsageError(f"ARC data not found: {chal} (set SEAL_DATA to the folder holding few-shot/data)")
        return parse_tasks(_read_json(chal), _read_json(sol) if sol.is_file() else None, spec)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"unknown ARC data {spec!r} (known: {', '.join(KNOWN)}, or a challenges JSON file)")
    sol = path.with_name(path.name.replace("challenges", "solutions"))
    return parse_tasks(_read_json(path), _read_json(sol) if sol != path and sol.is_file() else None, spec)


def select_tasks(spec: str, n: int | None = None) -> list[ArcTask]:
    """The first n tasks of a spec, in the file's order (generated: the split's fixed order)."""
    if n is not None and n < 1:
        raise UsageError("--n must be at least 1")
    return load_tasks(spec)[:n]


def held_out_of(spec: str) -> str | None:
    """The evaluation split that a training spec must not overlap."""
    return {"generated:train": "generated:eval", "arc-1b:train": "arc-1b:eval", "arc-1:train": "arc-1:eval"}.get(spec)


def check_no_overlap(tasks: list[ArcTask], exclude: list[str]) -> None:
    """Refuse training tasks whose content also appears in an evaluation set."""
    mine = {t.fingerprint: t.id for t in tasks}
    for spec in exclude:
        shared = [mine[t.fingerprint] for t in load_tasks(spec) if t.fingerprint in mine]
        if shared:
            raise UsageError(f"{len(shared)} training task(s) also appear in {spec} ({', '.join(shared[:3])}); refusing to train on them")


@dataclass
class Skipped:
    id: str
    tokens: int
    reason: str


def prompt_tokens(tokenizer, task: ArcTask) -> int:
    """Tokens of the longest sequence the task makes: all demonstrations, the test input and its answer."""
    text = task_prompt(task.train, task.test[0].input) + answer_text(task.test[0].output)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def within_budget(tokenizer, tasks: list[ArcTask], max_tokens: int) -> tuple[list[ArcTask], list[Skipped]]:
    """Split tasks into those whose full prompt fits `max_tokens` and those skipped (with why)."""
    kept, skipped = [], []
    for t in tasks:
        n = prompt_tokens(tokenizer, t)
        if n > max_tokens:
            skipped.append(Skipped(t.id, n, f"{n} tokens > budget {max_tokens}"))
        else:
            kept.append(t)
    return kept, skipped
