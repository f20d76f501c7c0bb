"""The ARC self-edit: a JSON object in which the model configures its own test-time training.

    {"augmentations": ["basic", "chain"], "loss": "outputs", "lr": 0.0005, "epochs": 2}

  augmentations  groups of augmented pseudo-tasks to train on (any subset, may be empty):
                 basic  - rotations, flips and transposes of the whole task;
                 size   - every grid scaled up 2x (when the grids stay small enough);
                 chain  - a geometric transform chained with a colour permutation;
                 repeat - the demonstrations again, in another order;
  loss           "outputs" (loss on the answer grid only) or "all" (every token of the pseudo-task);
  lr             LoRA learning rate, clamped to [LR_MIN, LR_MAX];
  epochs         passes over the sequences, clamped to [1, EPOCHS_MAX].

Two ways to get one from the model (`DECODINGS`): "free", the model writes the JSON text after
PREFILL (the 135M model wrote 0 usable of 10 that way); "choices", the model picks each value
among those the schema allows (`sample_by_choices`), so every self-edit parses and what the model
decides - and what ReST-EM trains - is the choice, scored by its own log-probabilities.

The first JSON object in the model's text is read (chatter around it is ignored). Anything else -
no object, bad JSON, a missing key, a wrong type, an unknown group, a non-finite number - makes
the self-edit malformed: it scores 0 and its reason is recorded; nothing is ever resampled.
Out-of-range numbers are clamped and the clamping is recorded.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from seal.core.runtime import UsageError

GROUPS = ("basic", "size", "chain", "repeat")
LOSSES = ("outputs", "all")
LR_MIN, LR_MAX = 1e-5, 1e-2
EPOCHS_MAX = 5
MAX_TEXT = 4000  # characters of a completion that are searched for the object
DECODINGS = ("choices", "free")
PREFILL = '{"augmentations": ['  # the start of every self-edit: the model continues the JSON object
# The values "choices" decoding offers for the numbers (within the clamped ranges; the oracle's grid
# and the ttt baseline use 1e-4, 5e-4 and 2e-3).
LR_CHOICES = ("0.0001", "0.0005", "0.001", "0.002", "0.005")
EPOCH_CHOICES = ("1", "2", "3", "4", "5")


@dataclass
class ArcSelfEdit:
    augmentations: tuple[str, ...] = ("basic",)
    loss: str = "outputs"
    lr: float = 5e-4
    epochs: int = 2
    clamped: list[str] = field(default_factory=list)  # fields moved into range, for the record

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("clamped")
        d["augmentations"] = list(self.augmentations)
        return json.dumps(d)


@dataclass
class ParsedSelfEdit:
    edit: ArcSelfEdit | None
    reason: str | None = None  # why it is malformed (edit is None)


def _first_object(text: str):
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
            return obj
        except ValueError:
            start = text.find("{", start + 1)
    return None


def parse_arc_self_edit(text: str) -> ParsedSelfEdit:
    """Parse and validate one completion; never raises."""
    if not isinstance(text, str):
        return ParsedSelfEdit(None, "not text")
    try:
        obj = _first_object(text[:MAX_TEXT])  # NaN / Infinity parse as floats and fail the finite checks
    except RecursionError:
        return ParsedSelfEdit(None, "JSON nested too deeply")
    if not isinstance(obj, dict):
        return ParsedSelfEdit(None, "no JSON object in the self-edit")
    missing = [k for k in ("augmentations", "loss", "lr", "epochs") if k not in obj]
    if missing:
        return ParsedSelfEdit(None, f"missing key(s): {', '.join(missing)}")
    augs = obj["augmentations"]
    if not isinstance(augs, list) or not all(isinstance(a, str) for a in augs):
        return ParsedSelfEdit(None, "augmentations must be a list of group names")
    unknown = [a for a in augs if a not in GROUPS]
    if unknown:
        return ParsedSelfEdit(None, f"unknown augmentation group(s): {', '.join(map(repr, unknown[:3]))} (known: {', '.join(GROUPS)})")
    if obj["loss"] not in LOSSES:
        return ParsedSelfEdit(None, f"loss must be one of {', '.join(LOSSES)}")
    lr, epochs = obj["lr"], obj["epochs"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        return ParsedSelfEdit(None, "lr must be a positive finite number")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs != int(epochs):
        return ParsedSelfEdit(None, "epochs must be a whole number")
    clamped = []
    if not LR_MIN <= lr <= LR_MAX:
        lr, clamped = min(max(lr, LR_MIN), LR_MAX), clamped + ["lr"]
    epochs = int(epochs)
    if not 1 <= epochs <= EPOCHS_MAX:
        epochs, clamped = min(max(epochs, 1), EPOCHS_MAX), clamped + ["epochs"]
    groups = tuple(g for g in GROUPS if g in augs)  # canonical order, no duplicates
    return ParsedSelfEdit(ArcSelfEdit(groups, obj["loss"], float(lr), epochs, clamped))


SELF_EDIT_INSTRUCTION = (
    "You will adapt yourself to the puzzle below by training on augmented copies of its examples.\n"
    "{demos}\n"
    "Choose the training. Reply with one JSON object only, with the keys:\n"
    '"augmentations": a list chosen from "basic" (rotations and flips), "size" (grids scaled up), '
    '"chain" (a rotation with recoloured cells), "repeat" (examples in another order);\n'
    '"loss": "outputs" or "all"; "lr": a learning rate between 0.00001 and 0.01; "epochs": 1 to 5.\n'
    'Example: {{"augmentations": ["basic"], "loss": "outputs", "lr": 0.0005, "epochs": 2}}'
)


def check_decoding(decoding: str) -> None:
    if decoding not in DECODINGS:
        raise UsageError(f"unknown self-edit decoding {decoding!r} (known: {', '.join(DECODINGS)})")


def self_edit_instruction(demos_text: str) -> str:
    return SELF_EDIT_INSTRUCTION.format(demos=demos_text)


@dataclass
class _Draft:
    """A self-edit being decoded by choices: its text after PREFILL and what is chosen so far."""

    text: str = ""
    groups: list[str] = field(default_factory=list)
    stage: int = 0  # 0 augmentations, 1 loss, 2 lr, 3 epochs, 4 done

    def options(self) -> list[tuple[str, str | None]]:
        """The next continuations the schema allows, each with the character that ends its value
        (so that "0.001" cannot stand for the start of "0.0015"), paired with the augmentation
        group it adds (None for every other option)."""
        if self.stage == 0:
            sep = ", " if self.groups else ""
            return [(f'{sep}"{g}"', g) for g in GROUPS if g not in self.groups] + [("]", None)]
        if self.stage == 1:
            return [(f'{loss}",', None) for loss in LOSSES]
        if self.stage == 2:
            return [(f"{lr},", None) for lr in LR_CHOICES]
        return [(f"{e}}}", None) for e in EPOCH_CHOICES]

    def take(self, option: tuple[str, str | None]) -> None:
        text, group = option
        self.text += text
        if group is not None:
            self.groups.append(group)
            return
        self.text += (', "loss": "', ' "lr": ', ' "epochs": ', "")[self.stage]  # the keys between the values
        self.stage += 1


def sample_by_choices(score: Callable[[list[tuple[str, list[str]]]], list[list[float]]], prompt: str, k: int,
                      seed: int, temperature: float) -> list[str]:
    """k self-edits (their text after PREFILL) decoded by choices: at each step every unfinished
    draft offers its options, `score([(context, options), ...])` gives the model's log-probability
    of each option after the context (prompt + PREFILL + the draft so far), and one is drawn with
    probability proportional to exp(log p / temperature) (temperature 0: the most likely). All k
    drafts advance together, one scoring call per step (drafts that agree so far scored once), and
    stop after at most 8 steps (4 groups, the closing bracket, loss, lr, epochs): bounded, and every
    result parses."""
    drafts = [_Draft() for _ in range(k)]
    rngs = [random.Random(f"{seed}/{j}") for j in range(k)]
    while True:
        live = [d for d in drafts if d.stage < 4]
        if not live:
            return [d.text for d in drafts]
        first: dict[str, _Draft] = {}  # drafts that agree so far (same text, same state) are scored once
        for d in live:
            first.setdefault(d.text, d)
        scored = dict(zip(first, score([(prompt + PREFILL + t, [text for text, _ in d.options()]) for t, d in first.items()])))
        for j, d in enumerate(drafts):
            if d.stage < 4:
                d.take(d.options()[_draw(scored[d.text], temperature, rngs[j])])


def _draw(logps: list[float], temperature: float, rng: random.Random) -> int:
    if not temperature:
        return max(range(len(logps)), key=lambda i: logps[i])
    top = max(logps)
    weights = [math.exp((lp - top) / temperature) for lp in logps]
    return rng.choices(range(len(logps)), weights=weights)[0]
