"""The forgetting guard: a candidate version becomes head only if it kept what the model knew.

After `seal learn` trains a candidate adapter, and before it commits it, the guard asks:

(a) retention probes: questions of the earlier versions in the head's chain (their gold
    questions for dataset items; for user documents, the questions the model wrote about them
    with the sentences that answer them). Of the probes the current head answers, the share the
    candidate still answers.
(b) general questions (resources/general/guard.jsonl), asked closed-book with no topic: of those
    the golden copy answers correctly, the share the candidate still answers. Generative on
    purpose: a head that answers everything with a sentence of its document passes a
    multiple-choice test far more often than this.
(c) the canary (multiple-choice accuracy, and its margin) and held-out perplexity, against the
    golden copy's.

Over budget, the candidate's delta is scaled down (each `scales` factor in turn, measured
again) as long as the scaled delta still answers `own_kept` of the questions about its own
document that the full delta answered (below that, scaling only undoes the learn); if no scale
fits, the version is stored as rejected and the head does not move, unless `force` is set. A
measurement that is not a finite number (a NaN or infinite perplexity, canary or share: the
candidate's weights are broken) is over budget, and such a version is rejected even with `force`,
with the reason in the decision. The cheap generative checks run first; the canary and
perplexity only for a scale that passed them. The decision and every measurement are written to
the manifest.

The guard's questions are disjoint from the general questions the benchmarks report
(questions.jsonl) and from the anchors that learning rehearses (anchors.txt).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from seal.guard.canary import canary_scores
from seal.core.config import AnswerConfig, GuardConfig, check_ranges
from seal.domains.knowledge.data import Passage
from seal.guard.general import GeneralQuestion, ask_general, load_general
from seal.domains.knowledge.grading import local_grade
from seal.core.adapters import check_base_weights, scale_adapter
from seal.domains.knowledge.qa import answer_questions
from seal.core.models import LoadedModel, cached_json
from seal.core.runtime import UsageError

PROBES_PER_DOCUMENT = 6  # retention probes stored per document (a seeded sample)
RECALL_F1 = 0.5  # a recalled sentence counts when it contains the sentence or overlaps it this much (token F1)
# Questions answered per generate() call: each decoding step reads every weight once whatever the
# batch, so on a CPU one batch of 40 is about as fast as one of 16 (the guard's sets fit one or two).
GUARD_BATCH = 64


@dataclass
class Probe:
    question: str
    topic: str | None
    answer: str
    kind: str  # "gold": a dataset question and its short answer; "self": the model's own question and the sentence


def check_guard(cfg: GuardConfig) -> None:
    check_ranges("guard", [
        ("general_kept", cfg.general_kept, lambda v: 0 <= v <= 1, "0 to 1"),
        ("retention", cfg.retention, lambda v: 0 <= v <= 1, "0 to 1"),
        ("canary_drop", cfg.canary_drop, lambda v: 0 <= v <= 1, "0 to 1"),
        ("perplexity_ratio", cfg.perplexity_ratio, lambda v: v >= 1, "a number >= 1"),
        ("own_kept", cfg.own_kept, lambda v: 0 <= v <= 1, "0 to 1"),
    ])
    if not all(isinstance(s, (int, float)) and 0 < s < 1 for s in cfg.scales):
        raise UsageError(f"guard: every scale must be between 0 and 1, not {list(cfg.scales)}")


def load_guard_questions(path: Path | None = None) -> list[GeneralQuestion]:
    return load_general(path or Path(str(resources.files("seal") / "resources" / "general" / "guard.jsonl")))


def document_probes(passage: Passage, sequences: list[str], seed: int, n: int = PROBES_PER_DOCUMENT) -> list[Probe]:
    """What to ask later to see whether this document is still known: its gold questions when it
    has them, else the question -> sentence pairs of its self-edits ("Q: ...\\nA: ...")."""
    if passage.questions:
        probes = [Probe(q.question, passage.title or None, q.answer, "gold") for q in passage.questions]
    else:
        probes = []
        for s in sequences:
            q, sep, a = s.partition("\nA: ")
            if sep and q.startswith("Q: ") and a.strip():
                probes.append(Probe(q[3:].strip(), passage.title or None, a.strip(), "self"))
    return random.Random(f"{seed}/{passage.sha256}").sample(probes, min(n, len(probes)))


def chain_probes(manifests: list[dict]) -> list[Probe]:
    """The probes of a chain's versions, with those a consolidated version inherited."""
    return [Probe(**p) for m in manifests for p in [*m.get("inherited_probes", []), *m.get("probes", [])]]


def ask_probes(lm: LoadedModel, probes: list[Probe], adapters: Sequence[Path] = ()) -> list[bool]:
    """Whether the model with `adapters` answers each probe (closed-book, with the document's title)."""
    if not probes:
        return []
    preds = answer_questions(lm, [(p.question, p.topic) for p in probes], AnswerConfig(batch_size=GUARD_BATCH), adapters=adapters)
    out = []
    for p, pred in zip(probes, preds):
        g = local_grade(p.question, p.answer, pred)
        out.append(g.correct or (p.kind == "self" and g.f1 >= RECALL_F1))
    return out


def _general(lm: LoadedModel, questions: list[GeneralQuestion], adapters: Sequence[Path] = ()) -> list[bool]:
    return [a["correct"] for a in ask_general(lm, questions, adapters=adapters, batch_size=GUARD_BATCH)]


def _ability(lm: LoadedModel, adapters: Sequence[Path] = ()) -> dict:
    c = canary_scores(lm, adapters)
    return {"canary_accuracy": c["reasoning_accuracy"], "canary_margin": c["margin"], "perplexity": c["perplexity"]}


def golden_reference(lm: LoadedModel, questions: list[GeneralQuestion]) -> dict:
    """The golden copy's guard answers, canary and perplexity (refused while adapters are applied
    to the model). Cached per base model and question list, beside the model cache."""
    def measure() -> dict:
        check_base_weights(lm.model, "the guard's golden reference")
        return {"general": _general(lm, questions, adapters=()), **_ability(lm, adapters=())}

    return cached_json("guard", [lm.checksum, [asdict(q) for q in questions]], measure,
                       valid=lambda ref: len(ref["general"]) == len(questions))


def _share(flags: list[bool], among: list[bool]) -> float | None:
    known = [f for f, a in zip(flags, among) if a]
    return round(sum(known) / len(known), 4) if known else None


def run_guard(
    lm: LoadedModel,
    cfg: GuardConfig,
    head: list[Path],
    candidate: list[Path],
    earlier: list[Probe],
    own: list[Probe],
    log: Callable[[str], None] = lambda _m: None,
    head_flags: list[bool] | None = None,
) -> dict:
    """Measure the candidate (adapters `candidate`, whose last folder is the new version) against
    the budget, scaling its delta down while it is over; returns the decision for the manifest.
    Runs with no adapters applied; names to the backend the adapters it measures. `head_flags`: which of
    `earlier` the head answers, as its own guard measured them when it was committed
    (`probe_flags` of its decision); asked again when missing or of another length."""
    t0 = time.perf_counter()
    questions = load_guard_questions()
    golden = golden_reference(lm, questions)
    reused = head_flags is not None and len(head_flags) == len(earlier)
    head_knew = list(head_flags) if reused else ask_probes(lm, earlier, head)
    budget = {"general_kept": cfg.general_kept, "retention": cfg.retention,
              "canary_accuracy": round(golden["canary_accuracy"] - cfg.canary_drop, 4),
              "perplexity": round(golden["perplexity"] * cfg.perplexity_ratio, 3)}
    checks = []
    applied_scale = 1.0
    own_full: list[bool] = []
    for scale in (1.0, *cfg.scales):
        if scale != applied_scale:
            scale_adapter(candidate[-1], scale / applied_scale)
            applied_scale = scale
        general = _general(lm, questions, candidate)
        retained = ask_probes(lm, earlier, candidate)
        own_flags = ask_probes(lm, own, candidate)
        own_full = own_full or own_flags
        m = {
            "scale": scale,
            "general_kept": _share(general, golden["general"]),
            "retention": _share(retained, head_knew),
            "own_probes": round(sum(own_flags) / len(own_flags), 4) if own_flags else None,
            # a scaled delta must still recall what the full one did, or scaling only undoes the learn
            "own_kept": _share(own_flags, own_full) if scale != 1.0 else None,
        }
        # Written as what fits, so that a NaN (which fails every comparison) is over budget too.
        m["over"] = [k for k, floor in (("general_kept", cfg.general_kept), ("retention", cfg.retention),
                                        ("own_kept", cfg.own_kept)) if m[k] is not None and not (m[k] >= floor)]
        if not m["over"]:  # the canary and perplexity cost most: measured only when the rest fits
            m.update(_ability(lm, candidate))
            m["over"] += [k for k, fits in (("canary_accuracy", m["canary_accuracy"] >= budget["canary_accuracy"]),
                                            ("perplexity", m["perplexity"] <= budget["perplexity"])) if not fits]
        broken = [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)]
        if broken:  # NaN or infinite: the candidate's weights are broken, whatever the budget says
            m["not_finite"] = broken
            m["over"] += [k for k in broken if k not in m["over"]]
        checks.append(m)
        flags = retained + own_flags
        log(f"guard at scale {scale:g}: general kept {_pct(m['general_kept'])}, earlier documents kept {_pct(m['retention'])}, "
            f"own questions {_pct(m['own_probes'])}"
            + (f", canary {m['canary_accuracy']:.1%} (golden {golden['canary_accuracy']:.1%}), perplexity {m['perplexity']:.1f} "
               f"(golden {golden['perplexity']:.1f})" if "perplexity" in m else "")
            + (f"; over budget: {', '.join(m['over'])}" if m["over"] else "; within budget"))
        if not m["over"] or "own_kept" in m["over"]:  # fits, or smaller scales would only forget more of the document
            break
    passed = not checks[-1]["over"]
    broken = checks[-1].get("not_finite", [])
    if passed:
        decision = "accepted" if applied_scale == 1.0 else "scaled"
    elif cfg.force and not broken:  # --force overrides a budget, never a measurement that is not a number
        decision = "forced"
    else:
        decision = "rejected"
    if not passed and applied_scale != 1.0:  # forced or rejected: store the delta as trained
        scale_adapter(candidate[-1], 1.0 / applied_scale)
        applied_scale = 1.0
    return {
        "decision": decision,
        **({"reason": f"{', '.join(broken)} not a finite number (NaN or infinite): the candidate's weights are broken"}
           if broken else {}),
        "scale": applied_scale,
        "budget": budget,
        "golden": {k: golden[k] for k in ("canary_accuracy", "canary_margin", "perplexity")}
        | {"general_correct": sum(golden["general"]), "general_questions": len(questions)},
        "head_probes_known": sum(head_knew),
        "head_probes_reused": reused,
        "n_earlier_probes": len(earlier),
        # which of the chain's probes (earlier, then own) this version answers as committed: the
        # next learn on top of it reads them instead of asking again
        **({"probe_flags": flags} if passed else {}),
        "checks": checks,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"
