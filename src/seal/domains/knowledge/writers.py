"""Who writes a passage's self-edits in a benchmark condition.

A writer is anything with `write(passage, seed) -> list[SelfEdit]`:
- `ModelWriter`: a local model (the student itself, a trained generator adapter on top of it, or
  another local teacher model) samples self-edits of one format;
- `RemoteWriter`: an OpenAI-compatible endpoint (a teacher such as GPT-4.1, or a vLLM server);
- `StoredWriter`: completions stored in a SEAL-format file, looked up by passage text (the first
  completion per passage is used, as in the paper's teacher row);
- `GoldQAWriter`: the passage's own gold question/answer pairs, trained as closed-book question ->
  answer. What will be asked later: a ceiling for reference, never a recipe a user can run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from seal.core.config import SamplingConfig
from seal.domains.knowledge.data import Passage, check_text, parse_json, read_text_file, text_field
from seal.core.models import LoadedModel
from seal.core.remote import ChatEndpoint, RemoteError
from seal.core.runtime import RuntimeFailure, UsageError, derive_seed
from seal.domains.knowledge.self_edit import FORMATS, SelfEdit, SelfEditFormat, get_format, parse_self_edit, resolved_temperature, sample_self_edits



class Writer(Protocol):
    def write(self, passage: Passage, seed: int) -> list[SelfEdit]: ...


@dataclass
class ModelWriter:
    lm: LoadedModel
    fmt: SelfEditFormat
    sampling: SamplingConfig
    adapters: list[Path] = field(default_factory=list)  # e.g. a generator adapter over the student

    def write(self, passage: Passage, seed: int) -> list[SelfEdit]:
        return sample_self_edits(
            self.lm, self.fmt, passage.title, passage.context, k=self.sampling.k,
            temperature=self.sampling.temperature, top_p=self.sampling.top_p, max_new_tokens=self.sampling.max_new_tokens,
            seed=seed, min_faithfulness=self.sampling.min_faithfulness, adapters=self.adapters,
        )


@dataclass
class RemoteWriter:
    endpoint: ChatEndpoint
    fmt: SelfEditFormat
    sampling: SamplingConfig

    def __post_init__(self):
        if self.fmt.unit != "passage":  # its instruction is per sentence (and may need a second, answering turn)
            passage_formats = ", ".join(n for n, f in FORMATS.items() if f.unit == "passage")
            raise UsageError(f"teacher format {self.fmt.name!r} prompts once per sentence, which a teacher endpoint is not "
                             f"asked; use a passage format ({passage_formats})")

    def write(self, passage: Passage, seed: int) -> list[SelfEdit]:
        prompt = self.fmt.instruction.format(title=passage.title, passage=passage.context)
        edits = []
        for _ in range(self.sampling.k):
            try:
                text = self.endpoint.complete(
                    [{"role": "user", "content": prompt}], max_tokens=self.sampling.max_new_tokens or self.fmt.max_new_tokens,
                    temperature=resolved_temperature(self.sampling.temperature, self.fmt),
                )
            except RemoteError as e:  # never train "teacher" on the passage alone; a rerun retries
                raise RuntimeFailure(f"teacher request failed for passage {passage.id}: {e}") from None
            edits.append(parse_self_edit(self.fmt, text, passage.title, passage.context, self.sampling.min_faithfulness))
        return edits


class StoredWriter:
    def __init__(self, path: Path, fmt: SelfEditFormat, min_faithfulness: float | None = None):
        raw = parse_json(read_text_file(path), str(path))
        if not isinstance(raw, list):
            raise UsageError(f"{path}: expected a SEAL JSON list of items with 'context' and 'completions'")
        self.by_context = {}
        for i, item in enumerate(raw):
            where = f"{path}: item {i}"
            if not isinstance(item, dict) or "completions" not in item:
                raise UsageError(f"{where} is not an object with 'context' and 'completions'")
            completions = item["completions"]
            if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
                raise UsageError(f"{where}: 'completions' must be a list of strings")
            for j, c in enumerate(completions):
                check_text(c, f"{where}: completion {j}")
            self.by_context[text_field(item, "context", where)] = completions
        self.fmt, self.path, self.min_faithfulness = fmt, path, min_faithfulness

    def write(self, passage: Passage, seed: int) -> list[SelfEdit]:
        completions = self.by_context.get(passage.context)
        if not completions:
            return [SelfEdit(self.fmt.name, "", [], [f"no stored completion for this passage in {self.path}"])]
        return [parse_self_edit(self.fmt, completions[0], passage.title, passage.context, self.min_faithfulness)]


class GoldQAWriter:
    fmt = "self-qa-chat"

    def write(self, passage: Passage, seed: int) -> list[SelfEdit]:
        text = "\n".join(f"Q: {q.question}\nA: {q.answer}" for q in passage.questions)
        return [parse_self_edit(get_format(self.fmt), text, passage.title, passage.context)]


def writer_seed(root: int, passage: Passage, condition: str, repeat: int) -> int:
    return derive_seed(root, "write", passage.id, passage.sha256, condition, repeat)
