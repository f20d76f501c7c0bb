"""Self-edit formats: the prompt that asks the model for its own training data, and the parser
that turns the completion into training sequences (SEAL.md section 2).

A self-edit that yields nothing usable is data, not an error: it keeps its raw text and the
reasons it was rejected, and the trial trains on the passage alone (or scores 0 upstream).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .faithfulness import check_lines
from .generation import generate, render_prompt
from .models import LoadedModel
from .runtime import derive_seed


@dataclass(frozen=True)
class SelfEditFormat:
    name: str
    instruction: str  # formatted with title and passage
    parser: str  # "lines": one sequence per line; "qa": one sequence per Q/A pair
    max_new_tokens: int
    summary: str


FORMATS: dict[str, SelfEditFormat] = {
    f.name: f
    for f in (
        SelfEditFormat(
            "implications",
            "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
            "Write a list of facts and consequences that follow from this article, one per line. "
            "Each line must be a complete sentence that names its subject.",
            "lines",
            256,
            "a list of implications of the passage, one training sequence per line (the paper's default)",
        ),
        SelfEditFormat(
            "implications-long",
            "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
            "Write a long, detailed list of everything that follows from this article: facts, "
            "consequences and connections, one per line. Each line must be a complete sentence "
            "that names its subject.",
            "lines",
            512,
            "a longer list of implications, one sequence per line",
        ),
        SelfEditFormat(
            "rewrite",
            "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
            "Rewrite this article in your own words. Keep every name, number and date exactly as "
            "written. Put each sentence on its own line.",
            "lines",
            320,
            "a paraphrase of the passage, one sequence per line",
        ),
        SelfEditFormat(
            "self-qa",
            "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
            "Write questions about the facts in this article, each followed by its short answer. "
            "Use this form for every pair:\nQ: <question>\nA: <answer>",
            "qa",
            320,
            "question/answer pairs about the passage, one sequence per pair",
        ),
    )
}


def get_format(name: str) -> SelfEditFormat:
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(name, FORMATS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    from .runtime import SealError

    raise SealError(f"unknown self-edit format {name!r} (known: {', '.join(FORMATS)}){hint}")


@dataclass
class SelfEdit:
    """One sampled self-edit and the training sequences parsed from it."""

    format: str
    text: str  # the raw completion
    sequences: list[str] = field(default_factory=list)  # parsed, before the title prefix
    rejected: list[str] = field(default_factory=list)  # why lines (or the whole edit) were dropped
    faithfulness: float | None = None  # share of the lines' names/numbers/long words found in the passage
    coverage: float | None = None  # share of the passage's sentences some kept line is about
    filter_rate: float = 0.0  # share of parsed lines dropped as unfaithful (min_faithfulness)

    @property
    def usable(self) -> bool:
        return bool(self.sequences)


_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)]|[a-z][.)](?=\s))\s*")
_PREAMBLE = re.compile(r"^(here|sure|certainly|of course|okay|ok|below|the following|implications|facts)\b", re.I)
_Q = re.compile(r"^\s*(?:Q|Question)\s*\d*\s*[:.)]\s*(.*)$", re.I)
_A = re.compile(r"^\s*(?:A|Answer)\s*\d*\s*[:.)]\s*(.*)$", re.I)
_INLINE_QA = re.compile(r"^\s*(?:Q|Question)\s*[:.]\s*(.+?)\s+(?:A|Answer)\s*[:.]\s*(.+)$", re.I)
MIN_WORDS = 3


def _clean_lines(text: str) -> list[str]:
    lines = []
    for raw in text.replace("\r", "\n").split("\n"):
        line = _BULLET.sub("", raw).strip().strip("*").strip()
        if line:
            lines.append(line)
    return lines


def parse_lines(text: str) -> tuple[list[str], list[str]]:
    """One sequence per line; drops a chatty preamble, headings, fragments and repeats."""
    kept, rejected, seen = [], [], set()
    for i, line in enumerate(_clean_lines(text)):
        key = line.lower()
        if i == 0 and (_PREAMBLE.match(line) or line.endswith(":")):
            rejected.append(f"preamble: {line}")
        elif line.endswith(":") and len(line.split()) < 12:
            rejected.append(f"heading: {line}")
        elif len(line.split()) < MIN_WORDS:
            rejected.append(f"too short: {line}")
        elif key in seen:
            rejected.append(f"repeat: {line}")
        else:
            seen.add(key)
            kept.append(line)
    return kept, rejected


def parse_qa(text: str) -> tuple[list[str], list[str]]:
    """One sequence per question/answer pair ("Q: ...\\nA: ..."); unpaired lines are dropped."""
    kept, rejected, seen = [], [], set()
    question = None
    for line in _clean_lines(text):
        if m := _INLINE_QA.match(line):
            q, a = m.group(1).strip(), m.group(2).strip()
        elif m := _Q.match(line):
            if question:
                rejected.append(f"question without answer: {question}")
            question = m.group(1).strip() or None
            continue
        elif (m := _A.match(line)) and question:
            q, a = question, m.group(1).strip()
        else:
            rejected.append(f"not a Q/A line: {line}")
            continue
        question = None
        pair = f"Q: {q}\nA: {a}"
        if not q or not a:
            rejected.append(f"empty question or answer: {line}")
        elif pair.lower() in seen:
            rejected.append(f"repeat: {q}")
        else:
            seen.add(pair.lower())
            kept.append(pair)
    if question:
        rejected.append(f"question without answer: {question}")
    return kept, rejected


def parse_self_edit(fmt: SelfEditFormat, text: str, title: str | None = None, passage: str | None = None,
                    min_faithfulness: float | None = None) -> SelfEdit:
    """Parse a completion into sequences; with the passage, score (and optionally filter) each line."""
    parse = parse_qa if fmt.parser == "qa" else parse_lines
    sequences, rejected = parse(text)
    scores = {}
    if passage is not None:
        check = check_lines(sequences, title or "", passage, min_faithfulness)
        sequences = check["kept"]
        rejected += [f"unfaithful ({score:.2f}): {line}" for line, score in check["dropped"]]
        scores = {k: check[k] for k in ("faithfulness", "coverage", "filter_rate")}
    if not text.strip():
        rejected.append("empty generation")
    elif not sequences:
        rejected.append("no usable line")
    return SelfEdit(format=fmt.name, text=text, sequences=sequences, rejected=rejected, **scores)


def self_edit_prompt(lm: LoadedModel, fmt: SelfEditFormat, title: str, passage: str) -> str:
    return render_prompt(lm, fmt.instruction.format(title=title, passage=passage))


def sample_self_edits(
    lm: LoadedModel,
    fmt: SelfEditFormat,
    title: str,
    passage: str,
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int | None = None,
    seed: int = 0,
    min_faithfulness: float | None = None,
) -> list[SelfEdit]:
    """Sample k self-edits for one passage as one batch; the seed is derived from the passage."""
    prompt = self_edit_prompt(lm, fmt, title, passage)
    texts = generate(
        lm,
        [prompt],
        max_new_tokens=max_new_tokens or fmt.max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=k,
        seed=derive_seed(seed, "self-edit", fmt.name, title, passage),
    )[0]
    return [parse_self_edit(fmt, t, title, passage, min_faithfulness) for t in texts]


def training_sequences(title: str, passage: str, edits: list[SelfEdit], include_passage: bool) -> list[str]:
    """Title-prefixed sequences of every self-edit, plus the raw passage unless disabled."""
    seqs = [f"{title}\n{s}" for e in edits for s in e.sequences]
    if include_passage:
        seqs.append(f"{title}\n{passage}")
    return seqs
