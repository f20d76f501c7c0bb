"""Bad command-line inputs, each run in a fresh process and classified (part of benchmarks/fault_injection.py).

Each case says what is due: `error` (a refusal), `warn` (a refusal, or success with a `warning:`
line), `ok` (success, and its check holds) or `either` (success or a refusal, never a crash).
Its outcome is one of:

    clean      exit 1 or 2, the last line of stderr starts with `error:` (or Typer's usage box for an
               option it refuses while parsing), no traceback; where the case has a check, it holds
    ok         exit 0 where success is right (or a `warning:` was printed where one was due)
    traceback  a Python traceback, or any exit other than 0, 1, 2 (a signal, an OOM kill)
    silent     exit 0 where an error or a warning was due, or a success whose check fails (a wrong result)
    refused    a clean error where success was due
    late       a clean error, but only after writing what a refusal must not (a run folder, a store)
    hang       still running at the timeout

`seal serve`'s bounds (body size, prompt length, queues, uploads) are covered by tests/test_serve.py,
which drives the app in-process; they are not repeated here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fault_cases import FAST, Ran, describe, fresh_copy, outcome, run, seal

DOC = "# Ferry BOM\n\nIn March 2026 Volthaven supplied 3 batteries for the ferry of Porto.\n"
ITEM = {"id": "p0", "title": "Porto", "context": "In 2026 the Porto ferry got batteries from Volthaven.",
        "questions": [{"question": "Who supplied the batteries?", "answer": "Volthaven"}]}


class Ctx:
    """Files and folders the cases name, made in `work`; `new` paths do not exist yet."""

    def __init__(self, work: Path, model: Path, template: Path):
        self.work, self.model, self.template, self.n = work, model, template, 0
        (work / "files").mkdir(parents=True)
        self.doc = self.file("doc.md", DOC)
        self.items = self.file("items.jsonl", json.dumps(ITEM) + "\n")

    def file(self, name: str, data: str | bytes) -> str:
        path = self.work / "files" / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return str(path)

    def new(self, prefix: str = "new") -> str:
        self.n += 1
        return str(self.work / f"{prefix}{self.n}")

    def empty_dir(self) -> str:
        path = Path(self.new("empty"))
        path.mkdir()
        return str(path)

    def store(self) -> str:
        """A copy of the template store (v1, v2)."""
        return str(fresh_copy(self.template, Path(self.new("store"))))

    def learn(self, doc: str | None = None, *extra: str, store: str | None = None) -> list[str]:
        self.last = store or self.new("store")
        return ["learn", doc or self.doc, "--store", self.last, "--model", str(self.model), *FAST, "--k", "1", *extra]

    def learn_data(self, data: str, *extra: str) -> list[str]:
        self.last = self.new("store")
        return ["learn", "--data", data, "--store", self.last, "--model", str(self.model), *FAST, "--k", "1", *extra]

    def ask(self, *args: str, store: str | None = None) -> list[str]:
        return ["ask", "Who supplied the batteries?", "--store", store or self.store(), "--model", str(self.model), *args]

    def continual(self, *args: str) -> list[str]:
        self.last = self.new("run")
        return ["bench", "continual", "--data", self.items, "--n", "1", "--model", str(self.model), "--out", self.last, *args]

    def knowledge(self, *args: str, out: str | None = None) -> list[str]:
        self.last = out or self.new("run")
        return ["bench", "knowledge", "--data", self.items, "--conditions", "base", "--repeats", "1", "--canary-sample", "0",
                "--model", str(self.model), "--epochs", "1", "--out", self.last, *args]

    def manifest_store(self, **fields) -> str:
        """A copy of the template whose head v2's manifest holds only `fields` (fields missing)."""
        s = self.store()
        (Path(s) / "versions" / "v0002" / "manifest.json").write_text(json.dumps(fields))
        return s


def nothing_written(ctx: Ctx, r: Ran) -> str:
    """A refusal must come before the run folder or the store is written."""
    return f"{ctx.last} was written before the refusal" if Path(ctx.last).exists() else ""


def bom_title_kept(ctx: Ctx, r: Ran) -> str:
    manifest = json.loads((Path(ctx.last) / "versions" / "v0001" / "manifest.json").read_text())
    titles = [d.get("title") for d in manifest["documents"]]
    return "" if titles == ["Ferry BOM"] else f"titles {titles}, not ['Ferry BOM']"


def garbage_trials(ctx: Ctx) -> list[str]:
    """A finished knowledge run with garbage lines added to its trials.jsonl."""
    run_dir = Path(ctx.new("run"))
    shutil.copytree(ctx.knowledge_run, run_dir)
    with (run_dir / "trials.jsonl").open("ab") as f:
        f.write(b'x\n{"key": 5}\n[1, 2]\n\xff\xfe\n{"key": "half", "per_q\n' + b"[" * 100000 + b"\n")
    return ["bench", "report", str(run_dir)]


@dataclass
class Case:
    name: str
    expect: str  # error | warn | ok | either
    args: Callable[[Ctx], list[str]]
    check: Callable[[Ctx, Ran], str] | None = None


NESTED = "[" * 100000 + "]" * 100000
CASES = [
    # data and documents
    Case("deeply nested JSON dataset", "error", lambda c: c.learn_data(c.file("nested.json", NESTED)), nothing_written),
    Case("deeply nested JSONL line", "error", lambda c: c.learn_data(c.file("nested.jsonl", '{"a": ' * 50000 + "1" + "}" * 50000 + "\n"))),
    Case("lone surrogate escaped in a JSON dataset", "error",
         lambda c: c.learn_data(c.file("surrogate.json", '[{"id": "p0", "title": "T", "context": "Volthaven \\ud800"}]'))),
    Case("lone surrogate bytes in a document", "error", lambda c: c.learn(c.file("surrogate.md", b"# T\n\nVolthaven \xed\xa0\x80 batteries.\n"))),
    Case("binary .txt document", "error", lambda c: c.learn(c.file("binary.txt", bytes(range(256)) * 8)), nothing_written),
    Case("empty document", "error", lambda c: c.learn(c.file("empty.md", ""))),
    Case("missing document", "error", lambda c: c.learn(str(c.work / "no-such.md"))),
    Case("UTF-8 BOM document keeps its title", "ok", lambda c: c.learn(c.file("bom.md", "\ufeff" + DOC)), bom_title_kept),
    Case('"context": 5', "error", lambda c: c.learn_data(c.file("ctx5.jsonl", json.dumps({**ITEM, "context": 5}))), nothing_written),
    Case('"context": NaN', "error", lambda c: c.learn_data(c.file("ctxnan.jsonl", json.dumps({**ITEM, "context": float("nan")})))),
    Case('"context" missing', "error", lambda c: c.learn_data(c.file("noctx.jsonl", json.dumps({"id": "p0", "title": "T"})))),
    Case('"title": ["a"]', "error", lambda c: c.learn_data(c.file("title.jsonl", json.dumps({**ITEM, "title": ["a"]})))),
    Case('"questions": 5 (eval)', "error", lambda c: ["eval", c.file("qs5.jsonl", json.dumps({**ITEM, "questions": 5})), "--base",
                                                       "--model", str(c.model)]),
    Case("empty JSON list dataset", "error", lambda c: c.learn_data(c.file("empty.json", "[]"))),
    Case("garbage line in a JSONL dataset", "error", lambda c: c.learn_data(c.file("garbage.jsonl", json.dumps(ITEM) + "\nnot json\n"))),
    Case("unknown bundled dataset split", "error", lambda c: c.learn_data("fresh-facts:nosuch")),
    Case("5001-digit --ids value", "error", lambda c: c.learn_data(c.items, "--ids", "1" * 5001)),
    Case("unknown --ids value", "error", lambda c: c.learn_data(c.items, "--ids", "nosuch")),
    # numeric options
    *[Case(f"learn {opt} {value}", "error", lambda c, o=opt, v=value: c.learn(None, o, v), nothing_written) for opt, value in [
        ("--lr", "1e38"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-1"), ("--max-new-tokens", "100000000"),
        ("--lora-r", "100000000"), ("--lora-alpha", "100000000"), ("--k", "1000"), ("--epochs", "100000000"),
        ("--batch-size", "100000000"), ("--temperature", "nan"), ("--top-p", "nan"), ("--min-faithfulness", "nan"),
        ("--guard-perplexity", "nan"), ("--guard-general", "nan"), ("--replay", "100000000"), ("--anchors", "100000000"),
        ("--target-modules", "nosuch"), ("--format", "nosuch"), ("--strategy", "nosuch"),
        ("--writer", "nosuch"), ("--anchor-loss", "nosuch"), ("--generator", "/no/such/generator")]],
    Case("learn --seed 10**30", "either", lambda c: c.learn(None, "--seed", "1" + "0" * 30)),
    Case("learn --chunk-words 10**11 (no document is split)", "either", lambda c: c.learn(None, "--chunk-words", "100000000000")),
    Case("learn --model missing folder", "error", lambda c: c.learn(None, "--model", "/no/such/model"), nothing_written),
    Case("learn --model an empty folder", "error", lambda c: c.learn(None, "--model", c.empty_dir()),
         nothing_written),
    # stores
    Case("--store ''", "error", lambda c: ["learn", c.doc, "--store", "", "--model", str(c.model), *FAST]),
    Case("--store a file", "error", lambda c: c.learn(None, store=c.file("a-file", "x"))),
    Case("ask --store TYPO", "warn", lambda c: c.ask(store=c.new("typo"))),
    Case("ask --base --version 1", "error", lambda c: c.ask("--base", "--version", "1")),
    Case("ask --version 99", "error", lambda c: c.ask("--version", "99")),
    Case("ask a question that is not UTF-8 (argv bytes)", "error", lambda c: ["ask", "Who \udcff?", "--store", c.store(), "--model", str(c.model)]),
    Case("ask an empty question", "either", lambda c: ["ask", "", "--store", c.store(), "--model", str(c.model)]),
    Case("ask a 20000-word question (beyond the context)", "either", lambda c: ["ask", "ferry " * 20000, "--store", c.store(),
                                                                            "--model", str(c.model)]),
    Case("rollback 99", "error", lambda c: ["rollback", "99", "--store", c.store()]),
    Case("restore a name not in quarantine", "error", lambda c: ["restore", "v0002-nosuch", "--store", c.store()]),
    Case("history of an empty folder", "error", lambda c: ["history", "--store", c.empty_dir()]),
    Case("export --out an existing folder", "error", lambda c: ["export", "--out", c.store(), "--store", c.store(), "--model", str(c.model)]),
    Case("history: head manifest missing fields", "either", lambda c: ["history", "--store", c.manifest_store(version=2)]),
    Case("ask: head manifest with only version and parent (read as an old seal's: warned)", "warn",
         lambda c: c.ask(store=c.manifest_store(version=2, parent=1))),
    Case("ask: head manifest without parent", "error", lambda c: c.ask(store=c.manifest_store(version=2))),
    Case("history: head manifest documents=5", "either", lambda c: ["history", "--store", c.manifest_store(version=2, parent=1, documents=5)]),
    # benchmarks
    Case("garbage lines in trials.jsonl, then bench report", "warn", garbage_trials),
    Case("bench report of a folder that is no run", "error", lambda c: ["bench", "report", c.store()]),
    *[Case(f"--teacher-file {what}", "error", lambda c, d=data: c.knowledge("--conditions", "teacher", "--teacher-file",
                                                                          c.file("teacher.json", d)), nothing_written)
      for what, data in [("not JSON", "{"), ("a number", "5"), ("items without completions", '[{"context": "x"}]'),
                         ("completions not strings", '[{"context": "x", "completions": [5]}]'), ("nested deeply", NESTED)]],
    Case("bench knowledge --conditions nosuch", "error", lambda c: c.knowledge("--conditions", "nosuch"), nothing_written),
    Case("bench knowledge --k 1000", "error", lambda c: c.knowledge("--k", "1000"), nothing_written),
    *[Case(f"bench continual --strategy {spec}", "error", lambda c, s=spec: c.continual("--strategy", s), nothing_written)
      for spec in ["nosuch", "stack:foo=1", "stack:r=0", "stack:r=100000000", "stack:lr=nan", "stack:lr=1e38", "stack:epochs=0",
                   "stack:writer=nosuch", "stack:mix=maybe", "stack:modules=nosuch", "stack,stack"]],
    Case("bench continual --only-sequence 5", "error", lambda c: c.continual("--only-sequence", "5"), nothing_written),
]


def classify(case: Case, ctx: Ctx, r: Ran) -> tuple[str, str]:
    """(outcome as in the module docstring, what was wrong or '')."""
    got = outcome(r)
    if got in ("hang", "traceback"):
        return got, describe(r)
    warned = any(line.startswith("warning:") for line in r.err.splitlines())
    if got == "ok" and (case.expect == "error" or (case.expect == "warn" and not warned)):
        return "silent", describe(r)
    if got == "clean" and case.expect == "ok":
        return "refused", describe(r)
    problem = case.check(ctx, r) if case.check else ""
    if problem:
        return ("silent" if got == "ok" else "late"), problem
    return got, ""


def bad_inputs(model: Path, template: Path, work: Path, env: dict, quick: bool = False) -> dict:
    ctx = Ctx(work, model, template)
    ctx.knowledge_run = Path(ctx.new("run"))
    r = run(seal(*ctx.knowledge(out=str(ctx.knowledge_run))), env)
    if r.rc != 0:
        raise SystemExit(f"the knowledge run for `bench report` failed: {describe(r)}\n{r.err[-2000:]}")
    counts = {k: 0 for k in ("clean", "ok", "traceback", "silent", "refused", "late", "hang")}
    failing, cases = [], CASES[::3] if quick else CASES
    for case in cases:
        r = run(seal(*case.args(ctx)), env, timeout=120)
        got, why = classify(case, ctx, r)
        counts[got] += 1
        if got not in ("clean", "ok"):
            failing.append({"case": case.name, "outcome": got, "why": why})
    return {"total": len(cases), **counts, "failing": failing}
