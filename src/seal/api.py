"""The Python API: one object for a model and its knowledge store.

    from seal import Seal

    s = Seal(store="my-store")                      # the embedded model; or model="path/to/hf-folder"
    result = s.learn("notes.md")                     # a file, a text, a Passage, or a list of them
    print(result.guard["decision"], s.ask("What did the pump cost?", topic="Heat pump"))
    s.history(); s.rollback(0); s.export("out-folder")

`Seal(model=hf_model, tokenizer=hf_tokenizer)` wraps a model already in memory (its weights are
hashed to identify the store's base). Every method raises `SealError` subclasses with the same
one-line messages the CLI prints; results have `.to_json()`. One `Seal` may be shared by threads:
what uses the weights runs one call at a time (see the class).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Union

from seal.core.config import AnswerConfig, LearnConfig
from seal.domains.knowledge.data import Passage, document_passages, load_dataset, load_document, select
from seal.core.models import LoadedModel, load_model
from seal.core.runtime import RuntimeFailure, SealError, UsageError
from seal.core.store import KnowledgeStore, default_store_dir

Source = Union[str, Path, Passage]


@dataclass
class Answer:
    text: str
    version: int

    def to_json(self) -> dict:
        return {"answer": self.text, "version": self.version}  # what `seal ask --json` prints


def _in_memory(model, tokenizer, name: str) -> LoadedModel:
    """A LoadedModel for a Hugging Face model and tokenizer already loaded; the base identity is
    the sha256 of its parameters (names, shapes, bytes)."""
    import torch

    if tokenizer is None:
        raise UsageError("a model object needs its tokenizer: Seal(model=m, tokenizer=t)")
    h = hashlib.sha256()
    with torch.no_grad():
        for n, p in sorted(model.state_dict().items()):
            h.update(n.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, path=Path("."), checksum=h.hexdigest())


def _one_at_a_time(method):
    """Run `method` holding the object's lock: learning trains on the weights in place, and asking
    adds a version's deltas to them for the call, so two such calls must never interleave."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Seal:
    """A base model (the golden copy, never changed on disk) and a knowledge store of LoRA versions.

    One writer, safe to share between threads: `learn`, `ask`, `eval`, `general` and `export`
    (everything that uses the model's weights, and its first loading) run one call at a time under
    a lock, so a caller asking while another thread learns waits until the learn has finished (or
    been refused) and then answers from the head as it is then; the golden copy in memory is the
    same after any mix of calls. `history`, `versions` and `version` only read the store and do not
    wait; `rollback` takes the store's writer lock and, while a learn holds it, raises the same
    one-line "busy" error as a second `seal` process would. For answers while learning, keep a
    second copy of the model (what `seal serve` does).
    """

    def __init__(self, store: str | Path | None = None, model=None, tokenizer=None, name: str | None = None,
                 loading: Callable[[], ContextManager] | None = None):
        self._lock = threading.RLock()  # reentrant: a locked method may call another (learn loads the model)
        self._loading = loading or contextlib.nullcontext  # wraps the model's loading (the CLI shows a status line)
        self.store = KnowledgeStore(Path(store) if store is not None else default_store_dir())
        self._spec = None if model is None else str(model) if isinstance(model, (str, Path)) else None
        self._lm: LoadedModel | None = None
        if model is not None and not isinstance(model, (str, Path)):
            self._lm = _in_memory(model, tokenizer, name or type(model).__name__)
            self._check_base()

    @property
    def lm(self) -> LoadedModel:
        """The base model, loaded on first use (history and rollback never load it)."""
        with self._lock:  # two threads asking first must not load it twice
            if self._lm is None:
                with self._loading():
                    self._lm = load_model(self._spec)
                self._check_base()
        return self._lm

    def _check_base(self) -> None:
        if self.store.exists:
            self.store.check_base(self._lm.name, self._lm.checksum)

    # -- learning ------------------------------------------------------------------------------
    @staticmethod
    def passages(sources: Source | Iterable[Source], max_chunk_words: int | None = None,
                 notes: list[str] | None = None) -> list[Passage]:
        """Documents as passages: a Path (a .txt/.md file), a str (a file path if one exists, else
        the text itself), or Passage objects (e.g. from `seal.domains.knowledge.data.load_dataset`).
        What a file's reading noticed (e.g. chunking) is appended to `notes`."""
        if isinstance(sources, (str, Path, Passage)):
            sources = [sources]
        words = max_chunk_words or LearnConfig.max_chunk_words
        out: list[Passage] = []
        for src in sources:
            if isinstance(src, Passage):
                out.append(src)
            elif isinstance(src, Path) or (isinstance(src, str) and "\n" not in src and len(src) < 4096 and Path(src).is_file()):
                out += load_document(Path(src), words, notes)
            elif isinstance(src, str) and src.strip():
                out += document_passages(src, f"text-{hashlib.sha256(src.encode()).hexdigest()[:12]}", "", words)
            else:
                raise UsageError(f"cannot learn from {src!r}: give a file path, a non-empty text or a Passage")
        return out

    @_one_at_a_time
    def learn(self, sources: Source | Iterable[Source], config: LearnConfig | None = None, reporter=None, *,
              source: str | None = None, generator: str | Path | None = None, notes: list[str] | None = None, **options):
        """Learn documents into a new version (`seal learn`); returns a `LearnOutcome`. Keyword
        options set fields of `LearnConfig` (e.g. strategy="replay", anchors=8). `generator`: a
        ReST-EM generator folder (`seal train ... OUT/iter_N`) writes the self-edits in its format.
        Settings and inputs are checked before the model is loaded or the store is touched."""
        from seal.domains import generator_chain, generator_format, is_adapter
        from seal.domains.knowledge.self_edit import get_format
        from seal.learn import check_config, learn as run_learn

        cfg = dataclasses.replace(config or LearnConfig(), **options)
        chain = None
        if generator is not None:
            generator = Path(generator)
            if not is_adapter(generator):
                raise UsageError(f"not a generator adapter folder: {generator} (expected OUT/iter_N of `seal train`)")
            cfg.format = generator_format(generator, cfg.format)
            chain = generator_chain(generator)
        fmt = get_format(cfg.format)
        check_config(cfg)
        if not cfg.sampling.max_new_tokens:
            cfg.sampling = dataclasses.replace(cfg.sampling, max_new_tokens=fmt.max_new_tokens)
        passages = self.passages(sources, cfg.max_chunk_words, notes)
        return run_learn(self.lm, self.store, passages, cfg, reporter, source=source or "python api", generator=chain)

    # -- using what was learned ----------------------------------------------------------------
    def version(self, version: int | None = None) -> int:
        """`version` checked against the store (None: the head; 0: the golden copy)."""
        if not self.store.exists:
            if version not in (None, 0):
                raise UsageError(f"no version {version}: the store {self.store.root} is empty")
            return 0
        v = self.store.head if version is None else version
        self.store.chain(v)  # validates v
        return v

    def _adapters(self, v: int) -> list[Path]:
        return self.store.adapter_dirs(v) if v else []

    @_one_at_a_time
    def ask(self, question: str, topic: str | None = None, version: int | None = None) -> Answer:
        """A closed-book answer (`seal ask`) from the head, an older version, or 0 (the golden copy)."""
        from seal.domains.knowledge.qa import answer_questions, check_question_fits

        if not question.strip():
            raise UsageError("empty question")
        v = self.version(version)
        check_question_fits(self.lm, question, topic)
        return Answer(answer_questions(self.lm, [(question, topic)], AnswerConfig(), adapters=self._adapters(v))[0], v)

    @_one_at_a_time
    def eval(self, data: str | list[Passage], version: int | None = None, ids: list[str] | None = None,
             n: int | None = None, reporter=None):
        """Closed-book accuracy (`seal eval`) on a dataset name/path or passages; an `EvalResult`."""
        from seal.domains.knowledge.qa import evaluate_with_progress
        from seal.core.progress import NullReporter

        passages = (select(load_dataset(data), ids or []) if isinstance(data, str) else list(data))[: n or None]
        if not any(p.questions for p in passages):
            raise UsageError(f"{data if isinstance(data, str) else 'passages'}: no questions to evaluate")
        v = self.version(version)
        return evaluate_with_progress(self.lm, passages, reporter or NullReporter(), f"closed-book QA, version {v}",
                                      adapters=self._adapters(v))

    @_one_at_a_time
    def general(self, version: int | None = None, questions=None) -> list[dict]:
        """The generative general-knowledge probe (`seal.guard.general`: ordinary questions asked
        closed-book, no topic) of a version (None: the head; 0: the golden copy): per question its
        id, prediction and whether it is correct. `general_summary(answers, golden)` compares two."""
        from seal.guard.general import ask_general

        return ask_general(self.lm, questions, adapters=self._adapters(self.version(version)))

    # -- the store -----------------------------------------------------------------------------
    def history(self) -> list[dict]:
        """The store's versions, oldest first (each manifest, plus `head`, `active` and `damaged`:
        None, or why the version's manifest cannot be read; such a version is listed, never hidden)."""
        if not self.store.exists:
            return []
        head = self.store.head
        active, v = set(), head
        while v and v not in active:  # the head's chain, as far as its manifests can be read
            active.add(v)
            try:
                v = self.store.manifest(v)["parent"]
            except RuntimeFailure:  # its own row says why
                break
        out = []
        for v in self.store.state()["versions"]:
            try:
                m = {**self.store.manifest(v), "damaged": None}
            except RuntimeFailure as e:
                m = {"version": v, "damaged": str(e)}
            out.append({**m, "head": v == head, "active": v in active})
        return out

    def versions(self) -> list[dict]:
        """One summary row per version (what `seal history` shows): documents, training, and the
        guard's measurements when it was learned (None where it was learned without the guard, and
        everything but `damaged` for a version whose manifest is damaged)."""
        out = []
        for m in self.history():
            g = m.get("guard") or {}
            checks = g.get("checks")
            last = checks[-1] if isinstance(checks, list) and checks and isinstance(checks[-1], dict) else {}
            out.append({
                "version": m["version"], "parent": m.get("parent"), "created": m.get("created"),
                "titles": sorted({d["title"] for d in m.get("documents", [])}), "n_sequences": len(m.get("training_sequences", [])),
                "train_seconds": m.get("timings", {}).get("train_seconds"), "active": m["active"], "head": m["head"],
                "strategy": m.get("strategy", "stack") if not m["damaged"] else None, "damaged": m["damaged"],
                "guard": g.get("decision"), "scale": g.get("scale"), "own_questions": last.get("own_probes"),
                "earlier_kept": last.get("retention"), "general_kept": last.get("general_kept"),
                "canary_accuracy": last.get("canary_accuracy"), "perplexity": last.get("perplexity"),
                "guard_seconds": g.get("seconds"),
            })
        return out

    def rollback(self, version: int) -> int:
        """Make `version` the head (0: the golden copy); later versions are kept. Returns the old head."""
        if not self.store.exists:
            raise UsageError(f"no knowledge store at {self.store.root}")
        with self.store.lock():
            old = self.store.head
            self.store.rollback(version)
        return old

    @_one_at_a_time
    def export(self, out: str | Path, version: int | None = None, format: str = "merged") -> dict:
        """Write a version out of the store (`seal export`); returns the export manifest."""
        from seal.export import FORMATS, export_version

        if format not in FORMATS:
            raise UsageError(f"unknown export format {format!r} (merged or adapter)")
        if not self.store.exists:
            raise UsageError(f"no knowledge store at {self.store.root} (it is created by the first `seal learn`)")
        return export_version(self.lm, self.store, self.version(version), Path(out), format)


__all__ = ["Answer", "Seal", "SealError"]
