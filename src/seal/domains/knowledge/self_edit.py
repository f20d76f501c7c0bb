"""Self-edit formats: the prompt that asks the model for its own training data, and the parser
that turns the completion into training sequences (SEAL.md section 2).

A self-edit that yields nothing usable is data, not an error: it keeps its raw text and the
reasons it was rejected, and the trial trains on the passage alone (or scores 0 upstream).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from seal.domains import Samples
from seal.domains.knowledge.faithfulness import check_lines, sentences
from seal.core.generation import Sampling, render_prompt
from seal.core.inner_loop import TrainExample
from seal.domains.knowledge.qa import answer_prompt, first_line
from seal.core.models import LoadedModel
from seal.core.runtime import SealError, derive_seed


@dataclass(frozen=True)
class SelfEditFormat:
    name: str
    instruction: str  # formatted with title and passage (and sentence, for unit "sentence")
    parser: str  # "lines": one sequence per line; "qa": one sequence per Q/A pair
    max_new_tokens: int  # per prompt: per passage, or per sentence for unit "sentence"
    summary: str
    # "passage": one prompt per passage; "sentence": one prompt per passage sentence (the chat
    # formats keep the passage in context, the plain few-shot ones show the sentence alone); the
    # k-th self-edit joins every sentence's k-th completion.
    unit: str = "passage"
    # "text": each sequence is trained as "title\nsequence"; "answer": each Q/A pair is trained as
    # the closed-book answer prompt (topic = title) -> answer, loss on the answer only, so training
    # looks exactly like the questions asked later.
    train_as: str = "text"
    # Two-stage formats: the instruction asks only for a question; this second instruction (with
    # {question}, and {sentence} or {passage}) has the model answer it, greedily. The pair is
    # written as "Q: ...\nA: ..." and parsed like any Q/A completion.
    answer_instruction: str | None = None
    # Two-stage formats without a second generation: the answer trained is the sentence the
    # question was asked about (the passage's own words), so the fact is recalled whole.
    answer_with_sentence: bool = False
    # A plain few-shot prompt, never the chat template (which a 135M model follows worse).
    plain: bool = False
    # Sampling temperature when none is configured: the paper's 1.0; the sentence formats are
    # greedy, because SmolLM2-135M's sampled questions and paraphrases drift from the passage.
    temperature: float = 1.0


_ARTICLE = "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
# Few-shot examples for the plain-prompt formats: invented sentences (not from any dataset), one
# per kind of fact asked later (person, number, organisation, date).
_SHOTS = (
    ("The Kestrel bridge in Oslo, designed by Hana Kato, opened to cyclists in 2019.",
     "Who designed the Kestrel bridge in Oslo?", "Hana Kato"),
    ("The Lisbon tile museum sold 12,000 tickets in its first week, its director said.",
     "How many tickets did the Lisbon tile museum sell in its first week?", "12,000 tickets"),
    ("Its solar roof was installed by the Tartu firm Valgus Energia for 3.1 million euros.",
     "How much did the solar roof cost?", "3.1 million euros"),
    ("The Quito cable car carried its first passengers on 9 June 2025.",
     "When did the Quito cable car carry its first passengers?", "9 June 2025"),
)
_ASK_SHOTS = "".join(f"Sentence: {s}\nQuestion: {q}\n\n" for s, q, _ in _SHOTS)
_ANSWER_SHOTS = "".join(f"Sentence: {s}\nQuestion: {q}\nAnswer: {a}\n\n" for s, q, a in _SHOTS)
_QA_FORM = "Use this form:\nQ: <question>\nA: <answer>"


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
        SelfEditFormat(
            "self-qa-chat",
            _ARTICLE + "Write questions about the facts in this article (names, numbers, dates, places), each "
            "followed by its short answer copied from the article. " + _QA_FORM,
            "qa",
            320,
            "question/answer pairs about the passage, each trained as the closed-book question -> answer",
            train_as="answer",
        ),
        SelfEditFormat(
            "sentence-qa",
            _ARTICLE + "Write one quiz question about this sentence of the article, and its short answer "
            "copied from the sentence.\nSentence: {sentence}\n" + _QA_FORM,
            "qa",
            64,
            "one question/answer pair per passage sentence (passage in context), trained as question -> answer",
            unit="sentence",
            train_as="answer",
            temperature=0.0,
        ),
        SelfEditFormat(
            "sentence-ask",
            _ASK_SHOTS + "Sentence: {sentence}\nQuestion:",
            "qa",
            40,
            "per passage sentence the model asks a question (plain few-shot prompt), then answers it from"
            " the sentence; trained closed-book as question -> answer",
            unit="sentence",
            train_as="answer",
            plain=True,
            temperature=0.0,
            answer_instruction=_ANSWER_SHOTS + "Sentence: {sentence}\nQuestion: {question}\nAnswer:",
        ),
        SelfEditFormat(
            "sentence-recall",
            _ASK_SHOTS + "Sentence: {sentence}\nQuestion:",
            "qa",
            40,
            "per passage sentence the model asks a question (plain few-shot prompt); trained closed-book"
            " as question -> that sentence",
            unit="sentence",
            train_as="answer",
            plain=True,
            temperature=0.0,
            answer_with_sentence=True,
        ),
        SelfEditFormat(
            "sentence-rewrite",
            _ARTICLE + "Rewrite this sentence of the article in other words. Keep every name, number and "
            "date exactly as written, and name the subject.\nSentence: {sentence}",
            "lines",
            80,
            "a paraphrase of each passage sentence (passage in context), one sequence per line",
            unit="sentence",
            temperature=0.0,
        ),
    )
}


def get_format(name: str) -> SelfEditFormat:
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(name, FORMATS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
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


def _units(fmt: SelfEditFormat, passage: str) -> list[str]:
    """What each prompt of a self-edit is about: the passage, or each of its sentences."""
    return sentences(passage) if fmt.unit == "sentence" else [passage]


def instructions(fmt: SelfEditFormat, title: str, passage: str, units: list[str] | None = None) -> list[str]:
    """The raw instructions of one self-edit: one per passage, or one per sentence."""
    return [fmt.instruction.format(title=title, passage=passage, sentence=u) for u in units or _units(fmt, passage)]


def resolved_temperature(temperature: float | None, fmt: SelfEditFormat) -> float:
    """The configured sampling temperature, or the format's own when none is configured."""
    return fmt.temperature if temperature is None else temperature


def _render(lm: LoadedModel, fmt: SelfEditFormat, instruction: str) -> str:
    return instruction if fmt.plain else render_prompt(lm, instruction)


def sample_completions(
    lm: LoadedModel,
    fmt: SelfEditFormat,
    title: str,
    passage: str,
    *,
    k: int,
    temperature: float | None,
    top_p: float,
    max_new_tokens: int | None = None,
    seed: int = 0,
    adapters: Sequence[Path] = (),
) -> Samples:
    """Sample k self-edits for one passage as one batch (k per prompt; a sentence-unit format has a
    prompt per sentence and self-edit j joins their j-th completions) from the model with
    `adapters` (e.g. a trained generator); the seed is derived from the passage."""
    units = _units(fmt, passage)
    prompts = [_render(lm, fmt, i) for i in instructions(fmt, title, passage, units)]
    per_prompt = lm.generator.generate(prompts, adapters=adapters, sampling=Sampling(
        max_new_tokens=max_new_tokens or fmt.max_new_tokens, temperature=resolved_temperature(temperature, fmt),
        top_p=top_p, n=k, seed=derive_seed(seed, "self-edit", fmt.name, title, passage)))
    if fmt.answer_instruction or fmt.answer_with_sentence:
        # The generator writes only the question (stage one); the answer is stage two's or the sentence.
        questions = [[own_question(c) for c in p] for p in per_prompt]
        pairs = [[(pr, f" {q[j]}\n") for pr, q in zip(prompts, questions) if q[j]] for j in range(k)]
        per_prompt = _answer_own_questions(lm, fmt, title, passage, units, questions, adapters)
    else:
        pairs = [[(pr, p[j]) for pr, p in zip(prompts, per_prompt)] for j in range(k)]
    return Samples(["\n".join(p[j].strip() for p in per_prompt) for j in range(k)], pairs)


def sample_self_edits(lm: LoadedModel, fmt: SelfEditFormat, title: str, passage: str, *,
                      min_faithfulness: float | None = None, **sampling) -> list[SelfEdit]:
    """k parsed self-edits for one passage; `sampling` is `sample_completions`'s (k, temperature, ...)."""
    texts = sample_completions(lm, fmt, title, passage, **sampling).texts
    return [parse_self_edit(fmt, t, title, passage, min_faithfulness) for t in texts]


_QUESTION = re.compile(r"^(?:\s*(?:Q|Question)\s*\d*\s*[:.)])?\s*(.{8,}?\?)")


def own_question(completion: str) -> str | None:
    """The question on the first line of a completion (a "Q:"/"Question:" prefix dropped), or None."""
    m = _QUESTION.match(first_line(completion))
    return m.group(1).strip() if m else None


def _answer_own_questions(lm, fmt, title, passage, units: list[str], questions: list[list[str | None]],
                          adapters: Sequence[Path] = ()) -> list[list[str]]:
    """Stage two of a two-stage format: answer each sampled question (per unit, None where the
    completion asked none) with its sentence and the article in reach (greedy, one batch), or take
    that sentence as the answer; completions become "Q: ...\nA: ..." ("" without a question)."""
    asked = [(u, q) for u, qs in zip(units, questions) for q in qs]
    if fmt.answer_with_sentence:
        answers = iter([u] for u, q in asked if q)
    else:
        prompts = [_render(lm, fmt, fmt.answer_instruction.format(title=title, passage=passage, sentence=u, question=q))
                   for u, q in asked if q]
        answers = iter(lm.generator.generate(prompts, adapters=adapters, sampling=Sampling(max_new_tokens=32)) if prompts else [])
    flat = [f"Q: {q}\nA: {first_line(next(answers)[0])}" if q else "" for _, q in asked]
    width = len(questions[0]) if questions else 0
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def training_examples(lm: LoadedModel, title: str, passage: str, edits: list[SelfEdit], include_passage: bool) -> list[TrainExample]:
    """What the inner loop trains on: every self-edit sequence (title-prefixed text, or for
    `train_as="answer"` formats the closed-book answer prompt -> answer), plus the raw passage."""
    out = []
    for e in edits:
        as_answer = e.format in FORMATS and FORMATS[e.format].train_as == "answer"
        for s in e.sequences:
            q, sep, a = s.partition("\nA: ")
            if as_answer and sep and q.startswith("Q: "):
                out.append(TrainExample(a, prompt=answer_prompt(lm, q[3:], title)))
            else:
                out.append(TrainExample(f"{title}\n{s}"))
    if include_passage:
        out.append(TrainExample(f"{title}\n{passage}"))
    return out


def shown(examples: list[TrainExample]) -> list[str]:
    """Training examples as the strings recorded in manifests and trials (prompt + completion)."""
    return [ex.prompt + ex.completion for ex in examples]
