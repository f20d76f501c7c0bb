"""`seal learn`: read passages, write self-edits, train one LoRA version and make it the head.

The strategy (LearnConfig.strategy) decides what a new version learns with: `stack` trains it
on top of the head; `replay` also on a sample of the stored training examples of the head's
chain; `consolidate` retrains one adapter from the golden base on all of them plus the new ones,
so the head is always a single adapter.

The whole run holds the store's writer lock; the new version is committed only at the very
end, so a crash or a kill at any point leaves the previous head in place. A learn that fails
(training diverged, a disk full or read-only while the version is written) removes its
half-written folder and ends with one line naming the store; the head stays where it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from seal.guard.anchors import golden_anchors, golden_prose, golden_teacher
from seal.core.config import LearnConfig, check_inner, check_ranges, check_sampling
from seal.domains.knowledge.data import Passage, check_passages
from seal.core.environment import environment
from seal.guard.check import chain_probes, check_guard, document_probes, run_guard
from seal.core.adapters import ADAPTER_WEIGHTS
from seal.core.inner_loop import (
    Rehearsal, TrainExample, focused_teacher, run_inner_loop, steps_per_epoch, tokenize_example,
)
from seal.domains.knowledge.qa import EvalResult, evaluate_with_progress
from seal.core.models import LoadedModel, cache_notices
from seal.core.progress import NullReporter, Reporter
from seal.core.runtime import RuntimeFailure, SealError, UsageError, derive_seed, peak_memory_mb
from seal.domains.knowledge.self_edit import SelfEdit, get_format, sample_self_edits, shown, training_examples
from seal.core.store import KnowledgeStore


@dataclass
class LearnOutcome:
    version: int
    parent: int
    passages: list[Passage]
    self_edits: dict[str, list[SelfEdit]]
    sequences: list[str]
    train_seconds: float
    generate_seconds: float
    final_loss: float
    memory: dict
    before: EvalResult | None = None
    after: EvalResult | None = None
    warnings: list[str] = field(default_factory=list)
    guard: dict | None = None  # the guard's decision and measurements (seal.guard.check.run_guard)

    @property
    def head_moved(self) -> bool:
        return self.guard is None or self.guard["decision"] != "rejected"

    def to_json(self) -> dict:
        out = {
            "version": self.version,
            "parent": self.parent,
            "documents": [{"id": p.id, "title": p.title, "sha256": p.sha256} for p in self.passages],
            "n_self_edits": sum(len(v) for v in self.self_edits.values()),
            "n_usable_self_edits": sum(e.usable for v in self.self_edits.values() for e in v),
            "n_sequences": len(self.sequences),
            "generate_seconds": round(self.generate_seconds, 2),
            "train_seconds": round(self.train_seconds, 2),
            "final_loss": round(self.final_loss, 4),
            **self.memory,
            "warnings": self.warnings,
            "guard": self.guard,
        }
        if self.before is not None and self.after is not None:
            out["accuracy_before"] = round(self.before.accuracy, 4)
            out["accuracy_after"] = round(self.after.accuracy, 4)
            out["n_questions"] = self.after.n_questions
        return out


STRATEGIES = ("stack", "replay", "consolidate")
WRITERS = ("head", "base")
ANCHOR_LOSSES = ("ce", "kl")


MAX_REHEARSED = 1024  # replay, anchors, prose: examples rehearsed per epoch (each pool is far smaller)
MAX_TOPK = 1024  # anchor_topk: the golden distribution kept per position of ~250 anchors (memory grows with it)
MAX_WEIGHT = 100.0  # loss weights and anchor_focus, relative to a new example's 1


def check_config(cfg: LearnConfig) -> None:
    """Every setting of a learn, checked before any folder is written or any model is loaded (the
    CLI, `Seal.learn` and `seal bench continual`'s strategies all come through here)."""
    if cfg.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {cfg.strategy!r} (known: {', '.join(STRATEGIES)})")
    if cfg.writer not in WRITERS:
        raise UsageError(f"unknown self-edit writer {cfg.writer!r} (known: {', '.join(WRITERS)})")
    if cfg.anchor_loss not in ANCHOR_LOSSES:
        raise UsageError(f"unknown anchor loss {cfg.anchor_loss!r} (known: {', '.join(ANCHOR_LOSSES)})")
    check_ranges("learn", [
        *[(name, getattr(cfg, name), lambda v: 0 <= v <= MAX_REHEARSED, f"0 to {MAX_REHEARSED}", int)
          for name in ("replay", "anchors", "prose")],
        ("anchor_topk", cfg.anchor_topk, lambda v: 1 <= v <= MAX_TOPK, f"1 to {MAX_TOPK}", int),
        ("max_chunk_words", cfg.max_chunk_words, lambda v: v >= 1, "a whole number >= 1", int),
        ("seed", cfg.seed, lambda v: True, "a whole number", int),
        *[(name, getattr(cfg, name), lambda v: 0 <= v <= MAX_WEIGHT, f"0 to {MAX_WEIGHT:g}")
          for name in ("anchor_weight", "replay_weight", "prose_weight", "anchor_focus")],
    ])
    if cfg.anchor_focus and cfg.anchor_loss != "kl":
        raise UsageError("anchor_focus weighs the KL anchors' positions; it needs anchor_loss 'kl'")
    check_inner(cfg.inner)
    check_sampling(cfg.sampling)
    check_guard(cfg.guard)


def finite_adapter(folder: Path) -> bool:
    """Whether every weight of a stored LoRA adapter is a finite number."""
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(folder / ADAPTER_WEIGHTS).values())


@contextlib.contextmanager
def _version_writes(store: KnowledgeStore):
    """What a learn writes into the store. Yields `new_version_dir()`, the new version's working
    folder, which a failure removes; a write the file system refuses (disk full, read-only, no
    permission; safetensors reports these as SafetensorError) becomes one RuntimeFailure naming
    the store. The head and the listed versions are only changed by the commit, the last step."""
    made: list[Path] = []

    def new_version_dir() -> Path:
        made.append(store.new_version_dir())
        return made[-1]

    try:
        yield new_version_dir
    except BaseException as e:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, OSError):
            why = e.strerror or (os.strerror(e.errno) if isinstance(e.errno, int) else str(e))
            raise RuntimeFailure(f"learning into store {store.root} failed: {why}" + (f" ({e.filename})" if e.filename else "")
                                 + "; the head is unchanged") from None
        if type(e).__name__ == "SafetensorError":
            raise RuntimeFailure(f"learning into store {store.root} failed: {e}; the head is unchanged") from None
        raise


def stored_examples(manifest: dict) -> list[TrainExample]:
    """A version's own training examples; manifests older than `training_examples` only hold the
    shown strings, which are then replayed as plain text."""
    if "training_examples" in manifest:
        return [TrainExample(**e) for e in manifest["training_examples"]]
    return [TrainExample(s) for s in manifest.get("training_sequences", [])]


def chain_examples(store: KnowledgeStore, v: int | None = None) -> list[TrainExample]:
    """Everything version v's chain was taught, oldest first: each version's own examples and
    those a consolidated version inherited (replayed samples are not counted twice)."""
    out: list[TrainExample] = []
    for x in store.chain(v):
        m = store.manifest(x)
        out += [TrainExample(**e) for e in m.get("inherited_examples", [])] + stored_examples(m)
    return out


def learn(
    lm: LoadedModel,
    store: KnowledgeStore,
    passages: list[Passage],
    cfg: LearnConfig,
    reporter: Reporter | None = None,
    source: str = "",
    generator: list[Path] | None = None,
) -> LearnOutcome:
    reporter = reporter or NullReporter()
    fmt = get_format(cfg.format)
    check_config(cfg)
    if not passages:
        raise SealError("nothing to learn: no passages")
    check_passages(passages)
    with store.lock(), _version_writes(store) as new_version_dir, cache_notices(reporter.log):  # the first learn builds the golden copy's caches
        started = time.perf_counter()
        store.init(lm.name, lm.path, lm.verified_checksum())  # the weights' content, not a cache entry
        parent = store.head
        head = store.adapter_dirs(parent)
        quizzed = [p for p in passages if p.questions]
        before = evaluate_with_progress(lm, quizzed, reporter, "closed-book QA (before)", adapters=head)
        phases = {"qa_before_seconds": time.perf_counter() - started}  # wall seconds of each phase, for `seal bench speed`

        t0 = time.perf_counter()
        edits: dict[str, list[SelfEdit]] = {}
        warnings: list[str] = []
        # The writer: the head (today's behaviour) or the golden copy, whose self-edits do not drift;
        # a trained generator (ReST-EM) writes on top of it.
        writer = [*(head if cfg.writer == "head" else []), *(generator or [])]
        with reporter.task(f"writing self-edits ({fmt.name}, k={cfg.sampling.k})", len(passages)) as task:
            for p in passages:
                if cfg.sampling.k == 0:  # passage only: the paper's "train on passage" baseline
                    edits[p.id] = []
                    task.advance()
                    continue
                edits[p.id] = sample_self_edits(
                    lm, fmt, p.title, p.context,
                    k=cfg.sampling.k, temperature=cfg.sampling.temperature,
                    top_p=cfg.sampling.top_p, max_new_tokens=cfg.sampling.max_new_tokens, seed=cfg.seed,
                    min_faithfulness=cfg.sampling.min_faithfulness, adapters=writer,
                )
                for i, e in enumerate(edits[p.id]):
                    if not e.usable:
                        warnings.append(f"{p.id}: self-edit {i} unusable ({e.rejected[-1]})")
                task.advance(info=f"{sum(len(e.sequences) for e in edits[p.id])} sequences")
        generate_seconds = time.perf_counter() - t0
        for w in warnings:
            reporter.log(f"warning: {w}")

        examples = [
            ex for p in passages for ex in training_examples(lm, p.title, p.context, edits[p.id], cfg.include_passage)
        ]
        if not examples:
            raise SealError("no training sequences: every self-edit was unusable and --no-passage was given")
        sequences = shown(examples)
        too_long = sum(len(tokenize_example(lm.tokenizer, ex, 1 << 30)[0]) > cfg.inner.max_seq_len for ex in examples)
        if too_long:
            warnings.append(f"{too_long} training sequence(s) longer than {cfg.inner.max_seq_len} tokens are cut to that "
                            "length (smaller --chunk-words keeps them whole)")
            reporter.log(f"warning: {warnings[-1]}")
        seed = derive_seed(cfg.seed, "learn", parent, *(p.sha256 for p in passages))
        # The strategy: what the new adapter trains on, on top of which weights, and its parent.
        earlier = chain_examples(store, parent) if cfg.strategy != "stack" else []
        train_on, new_parent = (head, None) if cfg.strategy != "consolidate" else ([], 0)
        trained = examples + (earlier if cfg.strategy == "consolidate" else [])
        # Rehearsed each epoch, a fresh sample each time: earlier versions' examples (replay) and
        # the golden copy's answers to ordinary prompts (anchors; no adapters are applied here).
        t0 = time.perf_counter()
        rehearsal = {}
        if cfg.strategy == "replay" and earlier and cfg.replay:
            rehearsal["replay"] = Rehearsal(earlier, cfg.replay, weight=cfg.replay_weight)
        if cfg.anchors:
            pool = golden_anchors(lm)
            teacher = golden_teacher(lm, pool, cfg.anchor_topk, cfg.inner.max_seq_len) if cfg.anchor_loss == "kl" else None
            if teacher is not None and cfg.anchor_focus:
                teacher = [focused_teacher(t, tokenize_example(lm.tokenizer, e, cfg.inner.max_seq_len)[1], cfg.anchor_focus)
                           for t, e in zip(teacher, pool)]
            rehearsal["anchors"] = Rehearsal(pool, cfg.anchors, weight=cfg.anchor_weight, teacher=teacher)
        if cfg.prose:
            pool = golden_prose(lm)
            rehearsal["prose"] = Rehearsal(pool, cfg.prose, weight=cfg.prose_weight,
                                           teacher=golden_teacher(lm, pool, cfg.anchor_topk, cfg.inner.max_seq_len))
        phases["caches_seconds"] = time.perf_counter() - t0  # the golden copy's answers and teacher: slow only when cold
        per_epoch = steps_per_epoch(len(trained), sum(r.sampled for r in rehearsal.values()), cfg.inner)
        total = cfg.inner.epochs * per_epoch
        label = (f"training LoRA on {len(examples)} sequences" + (f" + {len(earlier)} earlier ({cfg.strategy})" if earlier else "")
                 + "".join(f" + {r.per_epoch} {name}/epoch" for name, r in rehearsal.items()))
        folder = new_version_dir()

        def evaluate_after():
            t = time.perf_counter()
            after = evaluate_with_progress(lm, quizzed, reporter, "closed-book QA (after)")
            phases["qa_after_seconds"] = time.perf_counter() - t
            return after

        with reporter.task(label, total) as task:
            result, after = run_inner_loop(
                lm.model, lm.tokenizer, trained, cfg.inner, seed, evaluate=evaluate_after,
                keep=folder, on_step=lambda step, _total, loss: task.advance(info=f"loss {loss:.3f}"),
                rehearsal=tuple(rehearsal.values()), on=train_on,
            )
        if not finite_adapter(folder):  # the last step can blow the weights up after the last loss was checked
            raise RuntimeFailure(f"training diverged: the trained adapter holds NaN or infinite weights (learning rate "
                                 f"{cfg.inner.lr:g}; try a lower --lr); nothing was kept")
        # What to ask later to see whether these documents are still known, and the earlier ones'.
        probes = [pr for p in passages for pr in document_probes(p, [s for e in edits[p.id] for s in e.sequences], seed)]
        chain_manifests = [store.manifest(v) for v in store.chain(parent)]  # oldest first; the last is the head's
        earlier_probes = chain_probes(chain_manifests)
        decision = None
        t0 = time.perf_counter()
        if cfg.guard.enabled:
            with reporter.task("guard: general questions, earlier documents, canary", None):
                head_guard = chain_manifests[-1].get("guard", {}) if chain_manifests else {}
                decision = run_guard(lm, cfg.guard, head, [*train_on, folder], earlier_probes, probes, log=reporter.log,
                                     head_flags=head_guard.get("probe_flags"))
            if decision["scale"] != 1.0 and quizzed:  # the delta was scaled: measure what it now recalls
                after = evaluate_with_progress(lm, quizzed, reporter, "closed-book QA (after, scaled)",
                                               adapters=[*train_on, folder])
        phases["guard_seconds"] = time.perf_counter() - t0
        memory = peak_memory_mb()
        final_loss = sum(result.losses[-per_epoch:]) / min(per_epoch, len(result.losses))  # the last epoch's steps
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source,
            "base_sha256": lm.checksum,
            "documents": [
                {"id": p.id, "title": p.title, "sha256": p.sha256, "words": len(p.context.split())}
                for p in passages
            ],
            "self_edits": [
                {"passage_id": pid, **dataclasses.asdict(e)} for pid, es in edits.items() for e in es
            ],
            "training_sequences": sequences,
            "training_examples": [dataclasses.asdict(ex) for ex in examples],
            "strategy": cfg.strategy,
            # consolidate: the new version replaces its parent's chain, so it keeps what that chain was taught
            **({"consolidates": store.chain(parent), "inherited_examples": [dataclasses.asdict(ex) for ex in earlier]}
               if cfg.strategy == "consolidate" else {}),
            "rehearsal": {name: {"pool": len(r.pool), "per_epoch": r.per_epoch,
                                 **({"weight": r.weight} if r.weight != 1.0 else {}),
                                 **({"loss": "kl"} if r.teacher is not None else {}),
                                 **({"focus": cfg.anchor_focus} if name == "anchors" and cfg.anchor_focus else {})}
                          for name, r in rehearsal.items()},
            "probes": [dataclasses.asdict(pr) for pr in probes],
            **({"inherited_probes": [dataclasses.asdict(pr) for pr in earlier_probes]} if cfg.strategy == "consolidate" else {}),
            **({"guard": decision} if decision else {}),
            "config": dataclasses.asdict(cfg),
            "seed": seed,
            "metrics": {
                "final_loss": round(final_loss, 4),
                "epochs_run": result.epochs,
                "trained_tokens": result.n_tokens,  # completion tokens that carried loss, over all epochs
                "input_tokens": result.input_tokens,  # every token the training steps read, over all epochs
                "new_losses": [round(x, 4) for x in result.new_losses],  # per epoch, the new examples alone
                **({"recalled": [round(x, 4) for x in result.recalled]} if result.recalled else {}),  # per epoch
                "losses": [round(x, 4) for x in result.losses],
                **({"accuracy_before": before.accuracy, "accuracy_after": after.accuracy,
                    "n_questions": after.n_questions} if before else {}),
            },
            "timings": {"generate_seconds": round(generate_seconds, 2), "train_seconds": round(result.train_seconds, 2),
                        **{k: round(v, 2) for k, v in phases.items()},
                        "before_commit_seconds": round(time.perf_counter() - started, 2)},
            "memory": memory,
            "environment": environment(lm.model),
        }
        version = store.commit(folder, manifest, parent=new_parent, make_head=decision is None or decision["decision"] != "rejected")
    return LearnOutcome(
        version=version, parent=parent if new_parent is None else new_parent, passages=passages, self_edits=edits,
        sequences=sequences, train_seconds=result.train_seconds, generate_seconds=generate_seconds,
        final_loss=final_loss, memory=memory, before=before, after=after, warnings=warnings, guard=decision,
    )
