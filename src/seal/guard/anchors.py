"""Anchors: the golden copy's own answers to ordinary questions, rehearsed in every learn.

A learn trains question -> sentence pairs about one document. On its own that teaches the
adapter a shortcut, "answer any question with a sentence of the document" ("What is the capital
of France?" -> "It is 214 million kroner."). Mixing in a sample of ordinary prompts answered
by the golden copy (base weights, no adapters) teaches the adapter to leave everything else as
it was: self-distillation on the base model's own outputs, a cheap stand-in for a KL term to
the base model. The targets are the base model's answers whether right or wrong: the goal is
to keep what it did, not to teach it.

The prompts (resources/general/anchors.txt) are disjoint from the general questions used to
evaluate forgetting (questions.jsonl) and from the guard's probe (guard.jsonl). The golden
answers are generated once per base model and cached beside the model cache.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from seal.core.adapters import check_base_weights
from seal.core.config import AnswerConfig
from seal.core.inner_loop import TrainExample, teacher_topk, tokenize_example
from seal.domains.knowledge.qa import answer_prompt, answer_questions
from seal.core.models import LoadedModel, cached_json, cached_tensors

ANSWER_TOKENS = 32  # the golden answer's length limit; its first line is kept


def load_anchor_prompts(path: Path | None = None) -> list[str]:
    path = path or Path(str(resources.files("seal") / "resources" / "general" / "anchors.txt"))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def golden_anchors(lm: LoadedModel, prompts: list[str] | None = None) -> list[TrainExample]:
    """(closed-book answer prompt, golden answer) for every anchor prompt: the base model's
    answers (refused while adapters are applied to the model). Cached per base model and prompt list."""
    prompts = prompts if prompts is not None else load_anchor_prompts()

    def answer() -> dict:
        check_base_weights(lm.model, "the anchors' golden answers")
        return {"base_sha256": lm.checksum, "prompts": prompts, "answers": answer_questions(
            lm, [(p, None) for p in prompts], AnswerConfig(max_new_tokens=ANSWER_TOKENS, batch_size=16), adapters=())}

    answers = cached_json("anchors", [lm.checksum, ANSWER_TOKENS, prompts], answer,
                          valid=lambda c: len(c["answers"]) == len(prompts))["answers"]
    return [TrainExample(a, prompt=answer_prompt(lm, p, None)) for p, a in zip(prompts, answers) if a.strip()]


_TEACHERS: dict = {}  # (base checksum, k, max_len, the examples) -> golden_teacher's answer, per process


def golden_teacher(lm: LoadedModel, examples: list[TrainExample], k: int, max_len: int) -> list[tuple]:
    """The golden copy's top-k next-token distribution at every position of each anchor example
    (seal.core.inner_loop.teacher_topk), for distillation (LearnConfig.anchor_loss "kl"): the base model's
    (refused while adapters are applied or attached to the model). Kept in memory for the process and on
    disk beside the model cache (about 30 s of the embedded model's time per `seal learn` otherwise)."""
    key = (lm.checksum, k, max_len, tuple((e.prompt, e.completion) for e in examples))
    if key not in _TEACHERS:
        def compute() -> dict:
            check_base_weights(lm.model, "the golden teacher")
            top = teacher_topk(lm.model, [tokenize_example(lm.tokenizer, e, max_len)[0] for e in examples], k)
            return {f"{i}.{name}": t for i, pair in enumerate(top) for name, t in zip(("ids", "logp"), pair)}

        flat = cached_tensors("teacher", [*key[:3], [list(e) for e in key[3]]], compute,
                              valid=lambda d: len(d) == 2 * len(examples))
        if len(_TEACHERS) >= 4:
            _TEACHERS.clear()
        _TEACHERS[key] = [(flat[f"{i}.ids"], flat[f"{i}.logp"]) for i in range(len(examples))]
    return _TEACHERS[key]


PROSE_TOKENS = 96  # length of one golden continuation of a prose opener
PROSE_SAMPLES = 2  # continuations per opener


def load_prose_openers(path: Path | None = None) -> list[str]:
    path = path or Path(str(resources.files("seal") / "resources" / "general" / "prose.txt"))
    return load_anchor_prompts(path)


def golden_prose(lm: LoadedModel, openers: list[str] | None = None) -> list[TrainExample]:
    """Ordinary text as the golden copy writes it: each prose opener continued (plain text, no
    chat template; sampled at temperature 1, seeded), opener + continuation as one plain example.
    Refused while adapters are applied to the model. Cached per base model and opener list.
    Trained only by KL to the golden copy's distribution (LearnConfig.prose), never by cross-entropy."""
    from seal.core.generation import Sampling

    openers = openers if openers is not None else load_prose_openers()

    def continue_openers() -> dict:
        check_base_weights(lm.model, "the golden prose")
        texts = []
        for b in range(0, len(openers), 16):
            batch = openers[b : b + 16]
            outs = lm.generator.generate(batch, adapters=(), sampling=Sampling(
                max_new_tokens=PROSE_TOKENS, temperature=1.0, top_p=0.95, n=PROSE_SAMPLES, seed=b))
            texts += [o + c for o, cs in zip(batch, outs) for c in cs]
        return {"base_sha256": lm.checksum, "openers": openers, "texts": texts}

    texts = cached_json("prose", [lm.checksum, PROSE_TOKENS, PROSE_SAMPLES, openers], continue_openers,
                        valid=lambda c: len(c["texts"]) == len(openers) * PROSE_SAMPLES)["texts"]
    return [TrainExample(t) for t in texts if t.strip()]
