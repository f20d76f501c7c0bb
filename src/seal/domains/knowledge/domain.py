"""The knowledge-incorporation domain: a passage, a self-edit about it, and the closed-book
accuracy on its questions after training on passage + self-edit (the reward).

`reward_source="self-questions"` scores with question/answer pairs the model writes itself from
the passage (with the passage in context, before the update), for documents without gold
questions; the gold reward is recorded beside it whenever gold questions exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

from seal.core.config import InnerLoopConfig, SamplingConfig
from seal.domains.knowledge.data import Passage, Question, load_dataset, select_passages
from seal.core.generation import Sampling, render_prompt
from seal.core.inner_loop import TrainExample, run_inner_loop
from seal.domains.knowledge.qa import evaluate
from seal.core.metrics import pearson
from seal.core.models import LoadedModel
from seal.core.runtime import SealError, UsageError
from seal.domains.knowledge.self_edit import get_format, parse_qa, parse_self_edit, resolved_temperature, sample_completions, training_examples
from seal.domains import Samples

SELF_QUESTION_PROMPT = (
    "Here is a short article.\n\nTitle: {title}\n{passage}\n\n"
    "Write five quiz questions about specific facts in this article (names, numbers, dates), each "
    "followed by its short answer copied from the article. Use this form:\nQ: <question>\nA: <answer>"
)


@dataclass
class KnowledgeDomain:
    lm: LoadedModel
    format: str = "implications"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    reward_source: str = "gold"  # gold | self-questions
    exclude: list[str] = field(default_factory=list)  # evaluation sets the training items must not overlap
    sft: InnerLoopConfig = field(default_factory=InnerLoopConfig)  # the generator's fine-tuning
    name: str = "knowledge"
    baseline: str = "passage"  # the trial without a self-edit trains on the passage alone

    @property
    def extra_rewards(self) -> dict[str, str]:
        """Trials rewarded by self-questions are also scored by the gold questions: reported beside."""
        return {"gold": "gold_reward"} if self.reward_source != "gold" else {}

    def load_items(self, spec: str, n: int | None) -> list[Passage]:
        return select_passages(spec, n)

    def validate(self, items: list[Passage], k: int) -> None:
        if k > 1 and resolved_temperature(self.sampling.temperature, get_format(self.format)) == 0:
            raise UsageError(f"format {self.format!r} samples greedily, so its k={k} self-edits would be identical; "
                             "set a sampling temperature (e.g. --temperature 1.0)")
        check_no_overlap(items, self.exclude)
        if self.reward_source == "gold" and not any(p.questions for p in items):
            raise UsageError("the training items have no questions; use --reward self-questions")

    def sample(self, item: Passage, k: int, seed: int, generator: Sequence[Path] = ()) -> Samples:
        # The current model: golden base + the generator's adapters (the paper updates one model).
        drawn = sample_completions(
            self.lm, get_format(self.format), item.title, item.context, k=k, temperature=self.sampling.temperature,
            top_p=self.sampling.top_p, max_new_tokens=self.sampling.max_new_tokens, seed=seed, adapters=generator,
        )
        if self.reward_source == "self-questions":
            drawn.context = {"self_questions": [asdict(q) for q in self.self_questions(item, seed, generator)]}
        return drawn

    def self_questions(self, item: Passage, seed: int, generator: Sequence[Path] = ()) -> list[Question]:
        """Q/A pairs the current model writes with the passage in context (greedy)."""
        prompt = render_prompt(self.lm, SELF_QUESTION_PROMPT.format(title=item.title, passage=item.context))
        sampling = Sampling(max_new_tokens=200, seed=seed)
        text = self.lm.generator.generate([prompt], adapters=generator, sampling=sampling)[0][0]
        pairs, _ = parse_qa(text)
        return [Question(*(part.split(": ", 1)[1] for part in pair.split("\n", 1))) for pair in pairs]

    def no_update(self, item: Passage, context: dict | None = None, generator: Sequence[Path] = ()) -> dict:
        """The current model's score without any update (the table's base row)."""
        acc = evaluate(self.lm, [item], adapters=generator).accuracy if item.questions else None
        return {"reward": acc or 0.0, "gold_reward": acc}

    def reward(self, item: Passage, self_edit: str | None, seed: int, context: dict | None = None,
               generator: Sequence[Path] = ()) -> dict:
        self_questions = [Question(**q) for q in (context or {}).get("self_questions", [])]
        edits = ([parse_self_edit(get_format(self.format), self_edit, item.title, item.context, self.sampling.min_faithfulness)]
                 if self_edit is not None else [])
        examples = training_examples(self.lm, item.title, item.context, edits, include_passage=True)
        def score():
            gold = evaluate(self.lm, [item]) if item.questions else None
            selfq = evaluate(self.lm, [Passage(item.id, item.title, item.context, self_questions)]) if self_questions else None
            return gold, selfq

        # The trial trains on top of the current model, golden base + the generator (the paper updates one model).
        tr, (gold, selfq) = run_inner_loop(self.lm.model, self.lm.tokenizer, examples, self.inner, seed, evaluate=score,
                                           on=generator)
        out = {
            "n_sequences": len(examples),
            "usable": bool(edits and edits[0].usable) if self_edit is not None else None,
            "faithfulness": edits[0].faithfulness if edits else None,
            "coverage": edits[0].coverage if edits else None,
            "train_seconds": round(tr.train_seconds, 2),
            "gold_reward": gold.accuracy if gold else None,
            "self_question_reward": selfq.accuracy if selfq else None,
            "predictions": [q.prediction for q in gold.per_question] if gold else [],
        }
        out["reward"] = out["self_question_reward"] if self.reward_source == "self-questions" else out["gold_reward"]
        if out["reward"] is None:
            out["reward"] = 0.0
        return out

    def iteration_stats(self, trials: list[dict]) -> dict:
        """How well the self-question reward tracks the gold one, over the trials that have both."""
        pairs = [(t["self_question_reward"], t["gold_reward"]) for t in trials
                 if t.get("self_question_reward") is not None and t.get("gold_reward") is not None]
        return {"self_question_gold_correlation": pearson([a for a, _ in pairs], [b for _, b in pairs])}

    def fine_tune(self, pairs: list[tuple[str, str]], seed: int, folder: Path, on_step: Callable | None = None,
                  generator: Sequence[Path] = ()) -> dict:
        """SFT of a new LoRA link on top of the generator chain (loss on the completion only)."""
        examples = [TrainExample(c, prompt=pr) for pr, c in pairs]
        tr, _ = run_inner_loop(self.lm.model, self.lm.tokenizer, examples, self.sft, seed, evaluate=lambda: None,
                               keep=folder, on_step=on_step, on=generator)
        return {"losses": tr.losses, "train_seconds": tr.train_seconds}

    def describe(self) -> dict:
        return {"format": self.format, "base_sha256": self.lm.checksum}

    def worker_recipe(self) -> tuple[Callable, dict]:
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("lm", "name", "baseline")}
        return build_knowledge_domain, {"model_path": str(self.lm.path), **settings}


def build_knowledge_domain(model_path: str, **settings) -> KnowledgeDomain:
    """A worker's domain: the model loaded from its path, the driver's settings."""
    from seal.core.models import load_model

    return KnowledgeDomain(lm=load_model(model_path), **settings)


def knowledge_domain(cfg, lm: LoadedModel) -> KnowledgeDomain:
    """The domain a `seal train knowledge` config (RestEMConfig) describes, on a loaded model."""
    return KnowledgeDomain(lm, cfg.format, cfg.sampling, cfg.inner, reward_source=cfg.reward, exclude=list(cfg.exclude), sft=cfg.sft)


def check_no_overlap(items: list[Passage], exclude: list[str]) -> None:
    """Refuse training passages that also appear (same text) in an evaluation set."""
    train_hashes = {p.sha256 for p in items}
    for spec in exclude:
        try:
            held_out = load_dataset(spec)
        except SealError:
            if Path(spec).exists() or ":" in spec:
                raise
            continue
        overlap = train_hashes & {p.sha256 for p in held_out}
        if overlap:
            raise UsageError(f"{len(overlap)} training passage(s) also appear in the evaluation set {spec}; refusing to train on them")
