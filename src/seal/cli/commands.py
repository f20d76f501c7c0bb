"""The `seal` command line: learn, ask, eval, history, rollback, restore, export, serve, demo.

Progress goes to stderr, results to stdout (`--json` gives one JSON object), and every error a
user can cause is one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import signal
import sys
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from seal.cli.arc import arc_app
from seal.cli.bench import bench_app
from seal.cli.train import train_app
from seal.cli.common import HELP_MARKUP, JsonOpt, MinFaithOpt, ModelOpt, StoreOpt, cli_errors, err, finite, out, store_path
from seal.core.config import (
    DEFAULT_TARGET_MODULES, LEARN_LR, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_K, MAX_LORA_ALPHA, MAX_LORA_R, MAX_LR, MAX_NEW_TOKENS,
    GuardConfig, InnerLoopConfig, LearnConfig, SamplingConfig,
)
from seal.core.runtime import SealError, UsageError, json_text, quiet_libraries

app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="SEAL: a language model that writes its own training data and keeps what it reads.",
)


def _print_version(value: bool) -> None:
    if value:
        from seal import __version__

        out.print(f"seal {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Let library warnings (transformers, peft, torch) through to stderr."),
):
    # Runs before every command (the app's help text stays the one given to typer.Typer above).
    quiet_libraries(verbose)


def _store(path: Optional[Path]):
    from seal.core.store import KnowledgeStore, default_store_dir

    return KnowledgeStore(path or default_store_dir())


def _warn(notes: list[str]) -> None:
    for note in dict.fromkeys(notes):  # each once, in order
        err.print(Text.assemble(("warning:", "yellow"), f" {note}"), soft_wrap=True)


def _warn_notes(st) -> None:
    """What the store repaired or found on the way (printed once, as warnings)."""
    _warn(st.notes)
    st.notes.clear()


def _estimate(st, n: int) -> str:
    """A time estimate from this store's earlier versions (seconds per document), when it has any."""
    per_doc = []
    if st.exists:
        for m in st.manifests():
            t = m.get("timings", {})
            if m.get("documents"):
                per_doc.append((t.get("generate_seconds", 0) + t.get("train_seconds", 0)) / len(m["documents"]))
    if not per_doc:
        return "no estimate yet (this store has no earlier version to time; about 2-3 min per 200-word passage for the embedded model on 2 CPU cores)"
    median = sorted(per_doc)[len(per_doc) // 2]
    return f"about {n * median / 60:.0f} min at this store's median of {median:.0f} s per passage"


def _weights_note(base: dict) -> str:
    """What the base weights are: the embedded model is a 4-bit GGUF dequantized to float32."""
    from seal.core.models import EMBEDDED_GGUF, EMBEDDED_NAME

    if base.get("name") == EMBEDDED_NAME:
        return f"{EMBEDDED_GGUF} (Q4_1), dequantized to float32"
    return "loaded as float32"


def _load(model: Optional[str]):
    from seal.core.models import embedded_cache_dir, load_model

    first_time = model is None and not (embedded_cache_dir() / "seal-cache.json").is_file()
    msg = "converting the embedded GGUF model to a safetensors cache (once, ~20 s)" if first_time else "loading model"
    with err.status(msg):
        return load_model(model)


def _seal(store: Optional[Path], model: Optional[str]):
    """The API object the commands stand on; its model is loaded on first use, behind a status line."""
    from seal.api import Seal
    from seal.core.models import embedded_cache_dir

    if model is None and not (embedded_cache_dir() / "seal-cache.json").is_file():
        msg = "converting the embedded GGUF model to a safetensors cache (once, ~20 s)"
    else:
        msg = "loading model"
    return Seal(store=store or None, model=model, loading=lambda: err.status(msg))


def _version_or_base(version: Optional[int], base: bool) -> None:
    if base and version is not None:
        raise UsageError(f"give --base or --version {version}, not both (--base is --version 0, the golden copy)")


def _asked_store(s, store: Optional[Path], base: bool) -> None:
    """A --store named for a version (not the golden copy: `base`) must hold a store: a mistyped
    folder must not answer, evaluate or export from the golden copy."""
    if store is not None and not base and not s.store.exists:
        raise UsageError(f"no knowledge store at {store} (`seal learn --store {store}` creates one; --base asks the golden copy)")


def _split_ids(ids: Optional[List[str]]) -> list[str]:
    return [i for chunk in ids or [] for i in chunk.split(",") if i]


def _mark(ok: bool | None) -> Text | str:
    return "" if ok is None else Text("✓", style="green") if ok else Text("✗", style="red")


def _print_qa_table(title: str, rows: list[tuple[str, str, str, bool, str | None, bool | None]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in ("question", "gold", "before", "", "after", ""):
        table.add_column(col, overflow="fold")
    for q, gold, before, ok_before, after, ok_after in rows:
        table.add_row(q, gold, before, _mark(ok_before), after or "", _mark(ok_after))
    out.print(table)


@app.command()
@cli_errors
def learn(
    files: List[Path] = typer.Argument(None, help=".txt/.md documents to learn (title = first heading, else file name)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset to learn items from: fresh-facts[:train|eval|test] or a SEAL JSON/JSONL file."),
    ids: Optional[List[str]] = typer.Option(None, "--ids", help="Item ids of --data (repeat or comma-separate)."),
    format: str = typer.Option(LearnConfig.format, "--format", help="Self-edit format: sentence-recall (best measured for the embedded model), implications (the paper's), implications-long, rewrite, self-qa, self-qa-chat, sentence-ask, sentence-qa, sentence-rewrite."),
    k: int = typer.Option(SamplingConfig.k, "--k", min=0, help=f"Self-edits sampled per passage (one batch), 0 to {MAX_K}; all usable ones are trained on. 0 = passage only."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, callback=finite, help="Sampling temperature of self-edits (0 = greedy) [default: the format's: 1.0 for the paper's formats, 0 for sentence formats]."),
    top_p: float = typer.Option(SamplingConfig.top_p, "--top-p", min=0.0, max=1.0, callback=finite, help="Nucleus sampling mass."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help=f"Length limit of a self-edit, 1 to {MAX_NEW_TOKENS} tokens [default: per format]."),
    min_faithfulness: Optional[float] = MinFaithOpt,
    no_passage: bool = typer.Option(False, "--no-passage", help="Do not add the raw passage to the training sequences."),
    lr: float = typer.Option(LEARN_LR, "--lr", min=0.0, callback=finite, help=f"LoRA learning rate (AdamW, linear decay), 0 < lr <= {MAX_LR:g}; the paper's 1e-3. 3e-3 recalls no more and forgets far more (docs/RESULTS.md)."),
    epochs: int = typer.Option(InnerLoopConfig.epochs, "--epochs", min=1, help=f"Passes over the training sequences, 1 to {MAX_EPOCHS}."),
    lora_r: int = typer.Option(InnerLoopConfig.lora_r, "--lora-r", min=1, help=f"LoRA rank, 1 to {MAX_LORA_R}."),
    lora_alpha: int = typer.Option(InnerLoopConfig.lora_alpha, "--lora-alpha", min=1, help=f"LoRA alpha (scale = alpha / r), up to {MAX_LORA_ALPHA}."),
    target_modules: str = typer.Option(",".join(DEFAULT_TARGET_MODULES), "--target-modules", help="Comma-separated module names that get LoRA."),
    lora_layers: Optional[int] = typer.Option(InnerLoopConfig.lora_layers, "--lora-layers", min=1, help="LoRA on the top N decoder layers only; the frozen layers below are computed once per training sequence, not every epoch [default: every layer]."),
    batch_size: int = typer.Option(InnerLoopConfig.batch_size, "--batch-size", min=1, help=f"Sequences per optimiser step, 1 to {MAX_BATCH_SIZE}."),
    max_chunk_words: int = typer.Option(LearnConfig.max_chunk_words, "--chunk-words", min=20, help="Long documents are split into chunks of about this many words."),
    seed: int = typer.Option(LearnConfig.seed, "--seed", help="Root seed; trial seeds derive from it and the document."),
    generator: Optional[Path] = typer.Option(None, "--generator", help="A ReST-EM generator (seal train ... OUT/iter_N) that writes the self-edits."),
    strategy: str = typer.Option(LearnConfig.strategy, "--strategy", help="stack (train on top of the head), replay (also on a sample of the head chain's stored examples) or consolidate (retrain one adapter from the golden base on all of them)."),
    replay: int = typer.Option(LearnConfig.replay, "--replay", min=0, help="replay: stored examples of earlier versions rehearsed per epoch (a fresh sample each epoch)."),
    writer: str = typer.Option(LearnConfig.writer, "--writer", help="Who writes the self-edits: head (the current head) or base (the golden copy)."),
    anchors: int = typer.Option(LearnConfig.anchors, "--anchors", min=0, help="Golden-copy answers to ordinary prompts rehearsed per epoch, so other questions keep their answers (0: none)."),
    anchor_loss: str = typer.Option(LearnConfig.anchor_loss, "--anchor-loss", help="How anchors are trained: ce (cross-entropy on the golden copy's greedy answer) or kl (KL to the golden copy's next-token distribution at every position; no templates leak)."),
    prose: int = typer.Option(LearnConfig.prose, "--prose", min=0, help="Golden-copy continuations of ordinary prose distilled (KL) per epoch, to keep ordinary text as it was (0: none)."),
    stop_loss: Optional[float] = typer.Option(None, "--stop-loss", min=0.0, help="Stop training after the first epoch whose new examples' mean loss is below this (rehearsed ones are not counted) [default: all epochs]."),
    stop_recalled: bool = typer.Option(InnerLoopConfig.stop_recalled, "--stop-recalled/--no-stop-recalled", help="Stop training after the first epoch at whose end greedy decoding reproduces every new question -> answer pair (every new sequence when there are none; checked by one no-grad pass) [default: all epochs]."),
    mix_rehearsal: bool = typer.Option(InnerLoopConfig.mix_rehearsal, "--mix-rehearsal/--no-mix-rehearsal", help="Pack the rehearsed examples (replay, anchors) into the new examples' training steps instead of giving them steps of their own: training 1.17x faster, more forgetting (docs/continual.md)."),
    no_guard: bool = typer.Option(False, "--no-guard", help="Commit without the forgetting guard's checks."),
    force: bool = typer.Option(False, "--force", help="Make the new version head even when the guard finds it over budget (recorded as forced); never one measured NaN or infinite."),
    guard_general: float = typer.Option(GuardConfig.general_kept, "--guard-general", min=0.0, max=1.0, callback=finite, help="Guard: share of the general questions the golden copy answers that must still be answered."),
    guard_retention: float = typer.Option(GuardConfig.retention, "--guard-retention", min=0.0, max=1.0, callback=finite, help="Guard: share of the earlier documents' probes the head answers that must still be answered."),
    guard_canary: float = typer.Option(GuardConfig.canary_drop, "--guard-canary-drop", min=0.0, max=1.0, callback=finite, help="Guard: how far canary accuracy may fall below the golden copy's."),
    guard_perplexity: float = typer.Option(GuardConfig.perplexity_ratio, "--guard-perplexity", min=1.0, callback=finite, help="Guard: held-out perplexity may reach this multiple of the golden copy's."),
    store: Optional[Path] = StoreOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
):
    """Learn documents: write self-edits, train a LoRA version on top of the head, and commit it
    as the new head if the forgetting guard finds it kept what the model knew (else it is scaled
    down, or stored as rejected while the head stays)."""
    from seal.api import Seal
    from seal.core.progress import RichReporter
    from seal.domains.knowledge.data import load_dataset, select

    if not files and not data:
        raise SealError("nothing to learn: give .txt/.md files or --data NAME_OR_PATH")
    if ids and not data:
        raise SealError("--ids needs --data")
    cfg = LearnConfig(
        format=format,
        include_passage=not no_passage,
        seed=seed,
        max_chunk_words=max_chunk_words,
        strategy=strategy,
        replay=replay,
        writer=writer,
        anchors=anchors,
        anchor_loss=anchor_loss,
        prose=prose,
        guard=GuardConfig(enabled=not no_guard, force=force, general_kept=guard_general, retention=guard_retention,
                          canary_drop=guard_canary, perplexity_ratio=guard_perplexity),
        sampling=replace(SamplingConfig(), k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens or 0,
                         min_faithfulness=min_faithfulness),
        inner=replace(
            InnerLoopConfig(), lr=lr, epochs=epochs, lora_r=lora_r, lora_alpha=lora_alpha, batch_size=batch_size, stop_loss=stop_loss,
            stop_recalled=stop_recalled, mix_rehearsal=mix_rehearsal, lora_layers=lora_layers,
            target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        ),
    )
    # Read every input before loading the model or touching the store: bad input leaves it untouched.
    notes: list[str] = []
    passages = [p for f in files or [] for p in Seal.passages([Path(f)], max_chunk_words, notes)]
    if data:
        passages += select(load_dataset(data), _split_ids(ids))
    source = " ".join([str(f) for f in files or []] + ([f"{data}:{','.join(_split_ids(ids))}"] if data else []))
    s = _seal(store, model)
    _warn(notes)
    if len(passages) > 1:
        err.print(f"{len(passages)} passages to learn into one version; {_estimate(s.store, len(passages))}")
    try:
        outcome = s.learn(passages, cfg, RichReporter(err), source=source, generator=generator)
    finally:
        _warn_notes(s.store)
    format = s.store.manifest(outcome.version)["config"]["format"]  # a generator's own format, if one wrote
    summary = outcome.to_json()
    if as_json:
        print(json_text(summary))
        return
    if outcome.before is not None:
        rows = [
            (b.question, b.gold, b.prediction, b.correct, a.prediction, a.correct)
            for b, a in zip(outcome.before.per_question, outcome.after.per_question)
        ]
        _print_qa_table("closed-book answers, before vs after", rows)
    title = (f"learned version {outcome.version} (parent {outcome.parent})" if outcome.head_moved
             else f"version {outcome.version} stored as rejected; the head stays v{outcome.parent}")
    table = Table(title=title, show_header=False)
    table.add_row("documents", ", ".join(sorted({p.title for p in passages})))
    table.add_row("self-edits usable", f"{summary['n_usable_self_edits']}/{summary['n_self_edits']} ({format})")
    table.add_row("sequences trained", str(summary["n_sequences"]))
    table.add_row("generation time", f"{summary['generate_seconds']:.1f} s")
    table.add_row("training time", f"{summary['train_seconds']:.1f} s (final loss {summary['final_loss']:.3f})")
    table.add_row("peak memory", f"{summary['peak_rss_mb']:.0f} MB RSS" + (f", {summary['peak_cuda_mb']:.0f} MB CUDA" if "peak_cuda_mb" in summary else ""))
    if "accuracy_before" in summary:
        table.add_row("closed-book accuracy", f"{summary['accuracy_before']:.0%} -> {summary['accuracy_after']:.0%} ({summary['n_questions']} questions)")
    if outcome.guard:
        table.add_row("guard", _guard_line(outcome.guard, outcome.parent))
    out.print(table)


def _guard_line(g: dict, parent: int) -> str:
    last = g["checks"][-1]
    shown = (f"general kept {_share(last['general_kept'])}, earlier documents kept {_share(last['retention'])}, "
             f"own questions {_share(last['own_probes'])}"
             + (f", canary {last['canary_accuracy']:.1%} (golden {g['golden']['canary_accuracy']:.1%}), "
                f"perplexity {last['perplexity']:.1f} (golden {g['golden']['perplexity']:.1f})" if "perplexity" in last else "")
             + f"; {g['seconds']:.0f} s")
    if g["decision"] == "accepted":
        return f"accepted: {shown}"
    if g["decision"] == "scaled":
        return f"scaled to {g['scale']:g} of the trained delta to fit the budget: {shown}"
    over = ", ".join(g["checks"][-1]["over"])
    if g.get("reason"):  # a measurement that is not a number: no scale, and no --force, makes it head
        return f"REJECTED: {g['reason']}; head stays v{parent}: {shown}"
    if g["decision"] == "forced":
        return f"FORCED over budget ({over}) by --force: {shown}"
    return f"REJECTED, over budget ({over}) at every scale; head stays v{parent} (seal rollback N makes it head anyway): {shown}"


def _share(x) -> str:
    return _num(x, ".0%")


@app.command()
@cli_errors
def ask(
    question: str = typer.Argument(..., help="The question, answered closed-book (no document in the prompt)."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Topic (document title) given with the question."),
    version: Optional[int] = typer.Option(None, "--version", min=0, help="Ask an older version [default: head]."),
    base: bool = typer.Option(False, "--base", help="Ask the golden copy (base model, no versions)."),
    store: Optional[Path] = StoreOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
):
    """Answer a question from what the model has learned."""
    from seal.domains.knowledge.data import check_text

    _version_or_base(version, base)
    check_text(question, "the question")
    if topic is not None:
        check_text(topic, "--topic")
    s = _seal(store, model)
    _asked_store(s, store, base)
    answer = s.ask(question, topic=topic, version=0 if base else version)
    _warn_notes(s.store)
    if as_json:
        print(json_text(answer.to_json()))
    else:
        out.print(answer.text)


@app.command("eval")
@cli_errors
def eval_(
    data: str = typer.Argument(..., help="fresh-facts[:train|eval|test] or a SEAL-format JSON/JSONL file."),
    ids: Optional[List[str]] = typer.Option(None, "--ids", help="Only these item ids (repeat or comma-separate)."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Only the first N items."),
    version: Optional[int] = typer.Option(None, "--version", min=0, help="Evaluate an older version [default: head]."),
    base: bool = typer.Option(False, "--base", help="Evaluate the golden copy."),
    store: Optional[Path] = StoreOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
):
    """Closed-book QA accuracy of a version on a dataset (local grader: EM, containment, F1)."""
    from seal.core.progress import RichReporter

    _version_or_base(version, base)
    s = _seal(store, model)
    _asked_store(s, store, base)
    v = s.version(0 if base else version)
    result = s.eval(data, version=v, ids=_split_ids(ids), n=n, reporter=RichReporter(err))
    passages = {q.passage_id for q in result.per_question}
    _warn_notes(s.store)
    if as_json:
        print(json_text({"version": v, **result.to_json()}))
        return
    table = Table(title=f"{data}: version {v}")
    for col in ("question", "gold", "prediction", ""):
        table.add_column(col, overflow="fold")
    for q in result.per_question:
        table.add_row(q.question, q.gold, q.prediction, _mark(q.correct))
    out.print(table)
    s = result.summary()
    out.print(f"accuracy {s['accuracy']:.1%}  exact match {s['exact_match']:.1%}  F1 {s['f1']:.3f}  ({s['n_questions']} questions, {len(passages)} passages)")


@app.command()
@cli_errors
def history(store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt):
    """List the store's versions; the active ones make up the head. A version whose manifest is
    damaged is listed as damaged; version folders that recovery moved to the store's quarantine are
    listed after the table (`seal restore NAME` puts one back)."""
    s = _seal(store, None)
    st = s.store
    if not st.exists:
        raise SealError(f"no knowledge store at {st.root} (it is created by the first `seal learn`)")
    head = st.head
    rows = s.versions()
    quarantined = st.quarantined()
    base = st.info()["base"]
    _warn([r["damaged"] for r in rows if r["damaged"]])
    _warn_notes(st)
    if as_json:
        print(json_text({"store": str(st.root), "base": {**base, "weights": _weights_note(base)}, "head": head, "versions": rows,
                         "quarantined": quarantined}))
        return
    table = Table(title=f"{st.root}  (base {base['name']}, {_weights_note(base)}; head v{head})")
    for col in ("version", "parent", "created", "documents", "sequences", "strategy", "train s", "own Qs", "earlier kept",
                "general kept", "canary", "ppl", "guard", "state"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = "head" if r["head"] else ("active" if r["active"] else "inactive")
        if r["damaged"]:
            table.add_row(str(r["version"]), "?", "", r["damaged"].removeprefix(f"store {st.root}: "), *[""] * 9, f"DAMAGED ({state})")
            continue
        guard = "off" if r["guard"] is None else str(r["guard"]) + (f" x{_num(r['scale'], 'g')}" if r["guard"] == "scaled" else "")
        table.add_row(str(r["version"]), str(r["parent"]), str(r["created"]), "; ".join(r["titles"]), str(r["n_sequences"]),
                      str(r["strategy"]), _num(r["train_seconds"], ".1f"), _share(r["own_questions"]), _share(r["earlier_kept"]),
                      _share(r["general_kept"]), _share(r["canary_accuracy"]), _num(r["perplexity"], ".1f"), guard, state)
    out.print(table)
    if quarantined:
        out.print(f"quarantined in {st.root / 'quarantine'} (not used; `seal restore NAME` puts one back once repaired):")
        for q in quarantined:
            out.print(f"  {q['name']}  version {q['version']}: {q['reason']}")


def _num(x, spec: str) -> str:
    """A measurement as text; n/a where a manifest has none (or not a number)."""
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


@app.command()
@cli_errors
def rollback(
    version: int = typer.Argument(..., min=0, help="Version to make head (0 = the base model). Later versions are kept."),
    store: Optional[Path] = StoreOpt,
):
    """Make an earlier (or, to undo a rollback, a later) version the head."""
    s = _seal(store, None)
    try:
        old = s.rollback(version)
    finally:
        _warn_notes(s.store)  # what recovery did on the way, even when the rollback is refused
    out.print(f"head: v{old} -> v{version} (active: {s.store.chain(version) or 'base only'})")


@app.command()
@cli_errors
def restore(
    name: str = typer.Argument(..., help="A quarantined version folder, as `seal history` lists it (e.g. v0002-20260101-120000)."),
    store: Optional[Path] = StoreOpt,
):
    """Put back a version that recovery moved to the store's quarantine (once its files are repaired,
    or its parent is back): it is listed again as an inactive version, which `seal rollback N` makes head."""
    st = _store(store)
    if not st.exists:
        raise SealError(f"no knowledge store at {st.root}")
    try:
        with st.lock():
            v = st.restore(name)
    finally:
        _warn_notes(st)
    out.print(f"restored version {v} from quarantine as an inactive version (`seal rollback {v}` makes it head)")


@app.command()
@cli_errors
def export(
    out_dir: Path = typer.Option(..., "--out", help="New folder to write."),
    version: Optional[int] = typer.Option(None, "--version", min=0, help="Version to export [default: head; 0 = the golden copy]."),
    format: str = typer.Option("merged", "--format", help="merged: a Hugging Face model folder (base + the version's deltas); adapter: one PEFT LoRA adapter equal to the whole chain (exact: ranks concatenated)."),
    store: Optional[Path] = StoreOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
):
    """Write a version out of the store for transformers, PEFT, vLLM or lm-eval, with a manifest of what went in."""
    from seal.export import check_export

    check_export(out_dir, format)  # before the model loads
    s = _seal(store, model)
    _asked_store(s, store, version == 0)
    v = s.version(version) if s.store.exists else (version or 0)
    with err.status(f"exporting version {v} ({format})"):
        record = s.export(out_dir, version=v, format=format)
    _warn_notes(s.store)
    if as_json:
        print(json_text(record))
        return
    docs = sorted({d["title"] for d in record["documents"]})
    out.print(f"exported version {v} (chain {record['chain'] or 'base only'}; {len(docs)} document(s)) as {format} to {out_dir}")


@app.command()
@cli_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond localhost every endpoint needs the API key."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="SEAL_API_KEY", help="Bearer token; learning and rollback need it always. Prefer setting SEAL_API_KEY: a flag's value shows in `ps`."),
    max_body_kb: int = typer.Option(1024, "--max-body-kb", min=1, help="Largest request body accepted (413 above)."),
    max_jobs: int = typer.Option(32, "--max-jobs", min=1, help="Learn jobs that may wait in the queue (429 above)."),
    max_requests: int = typer.Option(16, "--max-requests", min=1, help="Generations running or waiting at once, streams included (503 above)."),
    store: Optional[Path] = StoreOpt,
    model: Optional[str] = ModelOpt,
):
    """Serve the head over an OpenAI-compatible API (chat, completions, streaming) that also learns
    documents posted to POST /v1/learn, in the background, behind the forgetting guard."""
    try:
        import uvicorn
    except ImportError:
        raise SealError("seal serve needs FastAPI and uvicorn: pip install -e '.[serve]'") from None
    from seal.api import Seal
    from seal.serve import LOCAL_HOSTS, Server, create_app

    if host not in LOCAL_HOSTS and not api_key:
        raise SealError(f"binding to {host} needs an API key: SEAL_API_KEY=KEY (or --api-key KEY)")
    with err.status("loading model (two copies: one serves, one learns)"):
        seal_ = Seal(store=store, model=model)
        server = Server(seal_, max_jobs=max_jobs, max_requests=max_requests)
    _warn(server.notes)
    err.print(f"serving {seal_.store.root} (head v{seal_.store.head if seal_.store.exists else 0}) on http://{host}:{port}/v1"
              + ("" if api_key else "; learning endpoints are off without SEAL_API_KEY"))
    uvicorn.run(create_app(server, api_key=api_key, host=host, max_body=max_body_kb * 1024), host=host, port=port,
                log_level="warning")


DEMO_GENERAL = ("g001", "g019", "g036", "g048", "g058", "g023")  # asked after every article of `seal demo`


@app.command()
@cli_errors
def demo(
    n: int = typer.Option(3, "--n", min=1, help="Articles of fresh-facts:eval to learn."),
    store: Optional[Path] = typer.Option(None, "--store", parser=store_path, metavar="<path>", help="Store for the demo [default: a fresh one in the cache dir]."),
    model: Optional[str] = ModelOpt,
    format: str = typer.Option(LearnConfig.format, "--format", help="Self-edit format."),
    lr: float = typer.Option(LEARN_LR, "--lr", min=0.0, callback=finite, help=f"LoRA learning rate, 0 < lr <= {MAX_LR:g} (seal learn's default; docs/RESULTS.md)."),
):
    """Learn a few unseen fictional articles and show closed-book answers before vs after."""
    import shutil

    from seal.core.models import cache_root
    from seal.core.progress import RichReporter
    from seal.domains.knowledge.data import load_dataset
    from seal.domains.knowledge.self_edit import get_format, resolved_temperature
    from seal.guard.general import general_summary, load_general
    from seal.learn import check_config

    cfg = LearnConfig(format=format)
    cfg.inner.lr = lr
    temp = resolved_temperature(cfg.sampling.temperature, get_format(format))
    check_config(cfg)  # before the demo store is cleared or the model loaded
    root = store or cache_root() / "demo-store"
    if store is None and root.exists():
        shutil.rmtree(root)
    s = _seal(root, model)
    passages = load_dataset("fresh-facts:eval")[:n]
    rep = RichReporter(err)
    before = s.eval(passages, version=0, reporter=rep)
    inner = cfg.inner
    err.print(f"recipe: {format} self-edits (k={cfg.sampling.k}, T={temp:g}) + passage; LoRA r={inner.lora_r} "
              f"alpha={inner.lora_alpha} lr={inner.lr:g} epochs={inner.epochs}; each article a new version on top of the last, "
              f"rehearsing {cfg.replay} earlier examples ({cfg.strategy}) and {cfg.anchors} ordinary prompts per epoch "
              f"({'distilling the golden copy' if cfg.anchor_loss == 'kl' else 'the golden copy answers'}); "
              "the forgetting guard checks each version before it becomes head")
    general = [q for q in load_general() if q.id in DEMO_GENERAL]
    golden = s.general(version=0, questions=general)
    for i, p in enumerate(passages):
        err.print(Text.assemble(("learning", "bold"), f" {p.title!r}"))
        outcome = s.learn([p], cfg, rep, source=f"fresh-facts:eval:{p.id}")
        if outcome.guard:
            err.print(f"  guard: {_guard_line(outcome.guard, outcome.parent)}")
        # what the head knows now: every article so far, and a few ordinary questions
        seen = s.eval(passages[: i + 1]).by_passage()
        answers = s.general(questions=general)
        g = general_summary(answers, golden, [q.context for q in passages[: i + 1]], general)
        err.print("  head v{}: {}; general questions: {} of the {} the golden copy answers still answered, {} copying an "
                  "article (e.g. {!r} -> {!r})".format(
                      s.store.head, ", ".join(f"{q.title} {seen[q.id]:.0%}" for q in passages[: i + 1]),
                      round((g["kept"] or 0) * g["n_base_correct"]), g["n_base_correct"], g["copies"],
                      general[0].question, answers[0]["prediction"]))
    after = s.eval(passages, reporter=rep)
    rows = [(b.question, b.gold, b.prediction, b.correct, a.prediction, a.correct) for b, a in zip(before.per_question, after.per_question)]
    _print_qa_table(f"{n} unseen articles, closed-book: base model vs after `seal learn` ({format})", rows)
    out.print(
        f"correct: before {sum(q.correct for q in before.per_question)}/{before.n_questions}, "
        f"after {sum(q.correct for q in after.per_question)}/{after.n_questions}   (store: {root})"
    )


app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(arc_app, name="arc")


def main() -> None:
    """The `seal` command. Ctrl-C ends it with one line and status 130 wherever it lands: in a
    command (cli_errors), while options are parsed or libraries load (where Typer exits 130
    without a word), or while Typer builds the command (where it does not catch it). Once the
    command has ended, its output is flushed and Ctrl-C gets its default action back: pressed
    while the interpreter exits (torch's exit handlers take a moment) it ends the process at once,
    without a word, instead of a KeyboardInterrupt traceback from an exit handler."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except SystemExit as e:
        if e.code == 130:
            err.print("interrupted")
        raise
    finally:
        _ended()


def _ended() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe: nothing to save
            stream.flush()
    with suppress(ValueError):  # not the main thread (main() called by another program): its handlers stay
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
