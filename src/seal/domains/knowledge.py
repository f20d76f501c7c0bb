"""The knowledge-incorporation domain: a passage, a self-edit about it, and the closed-book
accuracy on its questions after training on passage + self-edit (the reward).

`reward_source="self-questions"` scores with question/answer pairs the model writes itself from
the passage (with the passage in context, before the update), for documents without gold
questions; the gold reward is recorded beside it whenever gold questions exist.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import InnerLoopConfig, SamplingConfig
from ..data import Passage, Question
from ..generation import generate, render_prompt
from ..inner_loop import applied_adapters, lora_adapter, train
from ..knowledge import evaluate
from ..models import LoadedModel
from ..runtime import derive_seed
from ..self_edit import get_format, parse_qa, parse_self_edit, sample_completions, training_examples
from . import Samples

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
    generator: list[Path] = field(default_factory=list)  # adapter chain of the current generator
    reward_source: str = "gold"  # gold | self-questions
    name: str = "knowledge"

    def _current(self):
        """The current model: golden base + the generator's adapters (the paper updates one model)."""
        return applied_adapters(self.lm.model, self.generator) if self.generator else contextlib.nullcontext()

    def load_items(self, spec: str, n: int | None) -> list[Passage]:
        from ..bench import select_passages

        return select_passages(spec, n)

    def sample(self, item: Passage, k: int, seed: int) -> Samples:
        with self._current():
            return sample_completions(
                self.lm, get_format(self.format), item.title, item.context, k=k, temperature=self.sampling.temperature,
                top_p=self.sampling.top_p, max_new_tokens=self.sampling.max_new_tokens, seed=seed,
            )

    def self_questions(self, item: Passage, seed: int) -> list[Question]:
        """Q/A pairs the current model writes with the passage in context (greedy)."""
        prompt = render_prompt(self.lm, SELF_QUESTION_PROMPT.format(title=item.title, passage=item.context))
        with self._current():
            text = generate(self.lm, [prompt], max_new_tokens=200, temperature=0.0, seed=seed)[0][0]
        pairs, _ = parse_qa(text)
        return [Question(*(part.split(": ", 1)[1] for part in pair.split("\n", 1))) for pair in pairs]

    def no_update(self, item: Passage) -> dict:
        """The current model's score without any update (the table's base row)."""
        with self._current():
            acc = evaluate(self.lm, [item]).accuracy if item.questions else None
        return {"reward": acc or 0.0, "gold_reward": acc}

    def reward(self, item: Passage, self_edit: str | None, seed: int, self_questions: list[Question] | None = None) -> dict:
        edits = ([parse_self_edit(get_format(self.format), self_edit, item.title, item.context, self.sampling.min_faithfulness)]
                 if self_edit is not None else [])
        examples = training_examples(self.lm, item.title, item.context, edits, include_passage=True)
        with self._current(), lora_adapter(self.lm.model, self.inner, seed) as peft_model:
            tr = train(peft_model, self.lm.tokenizer, examples, self.inner, seed)
            gold = evaluate(self.lm, [item]) if item.questions else None
            selfq = None
            if self_questions:
                selfq = evaluate(self.lm, [Passage(item.id, item.title, item.context, self_questions)])
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


def trial_seed(root: int, iteration: int, passage_id: str, sample: int | str, repeat: int) -> int:
    return derive_seed(root, "rest-em", iteration, passage_id, sample, repeat)
