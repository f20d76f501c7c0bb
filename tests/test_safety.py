"""Nothing lost, ever: run folders and the store under damage and bad input (tiny model)."""

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import run_seal as _run_seal
from seal.bench.knowledge import BenchConfig, run_bench
from seal.cli.common import cli_errors
from seal.core.config import InnerLoopConfig, LearnConfig, SamplingConfig, check_inner
from seal.domains.knowledge.data import Passage, chunk_text
from seal.learn import learn
from seal.core.models import CACHE_MARKER, weights_checksum
from seal.core.run_records import MARKER
from seal.core.runtime import RuntimeFailure, UsageError
from seal.core.store import KnowledgeStore

FAST = ["--epochs", "1", "--lora-r", "4", "--lora-alpha", "8", "--max-new-tokens", "16"]
DOC = Passage("d1", "Lisbon ferry", "In March 2026 Volthaven supplied batteries for the ferry Maria Quiteria.")


def run_seal(*args):
    return _run_seal(*args, env={"OMP_NUM_THREADS": "1"})


def tiny_learn_cfg(**inner) -> LearnConfig:
    cfg = LearnConfig(sampling=SamplingConfig(max_new_tokens=16))
    cfg.inner = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, **inner)
    return cfg


def bench_cfg(tmp_path, **kw) -> BenchConfig:
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "p0", "title": "Town", "context": DOC.context,
                                "questions": [{"question": "Who supplied the batteries?", "answer": "Volthaven"}]}) + "\n")
    return BenchConfig(**{"data": str(data), "conditions": ["base"], "inner": InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1), **kw})


# -- run folders --------------------------------------------------------------------------------
def test_fresh_never_deletes_a_folder_seal_did_not_write(tiny_lm, tmp_path):
    user = tmp_path / "x"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep")
    (user / "report.md").write_text("my own report")
    for fresh in (True, False):
        with pytest.raises(UsageError, match="not empty and is not a knowledge benchmark run folder"):
            run_bench(bench_cfg(tmp_path), user, fresh=fresh, lm=tiny_lm)
    assert (user / "notes.txt").read_text() == "keep" and (user / "sub").is_dir()
    assert (user / "report.md").read_text() == "my own report" and not (user / "config.json").exists()
    (user / "config.json").write_text('{"some": "other tool"}')  # a config.json that is not ours
    with pytest.raises(UsageError, match="not a knowledge benchmark config"):
        run_bench(bench_cfg(tmp_path), user, fresh=True, lm=tiny_lm)
    assert (user / "notes.txt").exists()


def test_fresh_clears_only_the_runs_own_files(tiny_lm, tmp_path):
    run = tmp_path / "run"
    run_bench(bench_cfg(tmp_path), run, lm=tiny_lm)
    assert json.loads((run / "config.json").read_text())[MARKER] == "bench-knowledge"
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="different config .*seed"):
        run_bench(bench_cfg(tmp_path, seed=3), run, lm=tiny_lm)
    run_bench(bench_cfg(tmp_path, seed=3), run, fresh=True, lm=tiny_lm)
    assert (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "config.json").read_text())["seed"] == 3


def test_bad_hyper_parameters_are_refused_before_anything_is_written(tiny_lm, tmp_path):
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(UsageError, match="lr = .* is out of range"):
            check_inner(InnerLoopConfig(lr=bad))
        with pytest.raises(UsageError, match="out of range"):
            run_bench(bench_cfg(tmp_path, inner=InnerLoopConfig(lr=bad)), tmp_path / f"r{bad}", lm=tiny_lm)
        assert not (tmp_path / f"r{bad}").exists()
    r = run_seal("bench", "knowledge", "--out", str(tmp_path / "cli"), "--data", str(tmp_path / "items.jsonl"), "--lr", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "cli").exists()
    for value in ("nan", "inf"):
        r = run_seal("learn", str(tmp_path / "missing.md"), "--lr", value)
        assert r.returncode == 2 and "Traceback" not in r.stderr


def test_url_credentials_never_reach_the_run_folder(tiny_lm, tmp_path):
    cfg = bench_cfg(tmp_path, teacher_url="http://user:s3cret@127.0.0.1:9/v1", teacher_name="t")  # base only: never called
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    for name in ("config.json", "results.json", "trials.jsonl"):
        assert "s3cret" not in (tmp_path / "run" / name).read_text(), name
    assert json.loads((tmp_path / "run" / "config.json").read_text())["teacher_url"] == "http://***@127.0.0.1:9/v1"
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)  # the redacted config still resumes


# -- remote endpoints ---------------------------------------------------------------------------
class _Unauthorized(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_teacher_that_fails_stops_the_run_and_a_rerun_retries(tiny_lm, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://me:key@127.0.0.1:{server.server_port}/v1"
        cfg = bench_cfg(tmp_path, conditions=["base", "teacher"], teacher_url=url, teacher_name="t")
        with pytest.raises(RuntimeFailure, match="teacher request failed .*HTTP 401") as e:
            run_bench(cfg, tmp_path / "run", lm=tiny_lm)
        assert "key@" not in str(e.value)
        trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
        assert not [t for t in trials if t.get("condition") == "teacher"]  # nothing recorded: a rerun retries it
    finally:
        server.shutdown()


# -- training -----------------------------------------------------------------------------------
def test_a_diverging_loss_aborts_and_commits_nothing(tiny_lm, tmp_path):
    st = KnowledgeStore(tmp_path / "s")
    cfg = tiny_learn_cfg(lr=1.0)  # the largest lr allowed, with a LoRA scale of 4096: the loss is NaN by step 4
    cfg.inner.lora_r, cfg.inner.lora_alpha, cfg.inner.epochs = 1, 4096, 5
    cfg.sampling.k = 0
    with pytest.raises(RuntimeFailure, match="training diverged: the loss is (nan|inf)"):
        learn(tiny_lm, st, [DOC], cfg)
    assert st.head == 0 and st.state()["versions"] == []
    assert not any((st.root / "versions").iterdir())


# -- the store ----------------------------------------------------------------------------------
def learned_store(tiny_lm, tmp_path, n=2) -> KnowledgeStore:
    st = KnowledgeStore(tmp_path / "s")
    cfg = tiny_learn_cfg()
    cfg.sampling.k = 0
    for i in range(n):
        learn(tiny_lm, st, [Passage(f"d{i}", f"Doc {i}", f"{DOC.context} Item {i}.")], cfg)
    return st


def test_a_missing_or_damaged_state_is_rebuilt_never_a_wipe(tiny_lm, tmp_path):
    st = learned_store(tiny_lm, tmp_path)
    assert st.chain() == [1, 2]
    for damage in ("missing", "garbage"):
        path = st.root / "state.json"
        path.unlink() if damage == "missing" else path.write_text("{torn")
        fresh = KnowledgeStore(st.root)
        assert fresh.chain() == [1, 2] and fresh.notes  # readers see the versions, and are told
        with fresh.lock():
            pass
        assert json.loads(path.read_text()) == {"head": 2, "versions": [1, 2]}
    assert list(st.root.glob("state.json.damaged-*"))  # the damaged file is kept for a look
    assert all((st.root / "versions" / f"v000{v}" / "adapter_model.safetensors").is_file() for v in (1, 2))


def test_a_restored_older_state_adopts_newer_versions(tiny_lm, tmp_path):
    st = learned_store(tiny_lm, tmp_path)
    (st.root / "state.json").write_text(json.dumps({"head": 1, "versions": [1]}))  # a backup from before v2
    with st.lock():
        pass
    assert st.state() == {"head": 1, "versions": [1, 2]} and any("v2" in n for n in st.notes)
    assert st.manifest(2)["parent"] == 1


def test_a_missing_store_json_is_rebuilt_and_still_guards_the_base(tiny_lm, tmp_path):
    st = learned_store(tiny_lm, tmp_path, n=1)
    (st.root / "store.json").unlink()
    with pytest.raises(UsageError, match="belongs to base model"):
        KnowledgeStore(st.root).check_base("other", "f" * 64)
    cfg = tiny_learn_cfg()
    cfg.sampling.k = 0
    out = learn(tiny_lm, KnowledgeStore(st.root), [DOC], cfg)
    assert out.version == 2 and KnowledgeStore(st.root).chain() == [1, 2]
    assert json.loads((st.root / "store.json").read_text())["base"]["sha256"] == tiny_lm.checksum


def test_a_damaged_adapter_is_named_and_never_used(tiny_lm, tmp_path):
    st = learned_store(tiny_lm, tmp_path)
    weights = st.root / "versions" / "v0001" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RuntimeFailure, match="version 1 is damaged \\(adapter_model.safetensors does not match its sha256"):
        st.adapter_dirs()
    cfg = tiny_learn_cfg()
    cfg.sampling.k = 0
    with pytest.raises(RuntimeFailure, match="version 1 is damaged"):
        learn(tiny_lm, st, [DOC], cfg)  # never trains on top of garbage
    with st.lock(), pytest.raises(RuntimeFailure, match="damaged"):
        st.rollback(1)
    assert st.head == 2 and (st.root / "versions" / "v0001").is_dir()  # kept for repair, not deleted
    weights.unlink()
    with pytest.raises(RuntimeFailure, match="adapter_model.safetensors is missing"):
        st.adapter_dirs()


def test_cli_store_damage_is_one_line(tiny_model_dir, tmp_path):
    st = tmp_path / "s"
    (st / "versions" / "v0001").mkdir(parents=True)
    (st / "versions" / "v0001" / "manifest.json").write_text("{not json")
    (st / "state.json").write_text(json.dumps({"head": 1, "versions": [1]}))
    (st / "store.json").write_text("{broken")
    r = run_seal("history", "--store", str(st))  # lists what it can, the damaged version marked
    assert r.returncode == 0 and "Traceback" not in r.stderr and "DAMAGED (head)" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "version 1 is damaged" in lines[0]
    r = run_seal("rollback", "1", "--store", str(st))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "version 1 is damaged" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the error (and at most one warning)


def test_the_base_identity_comes_from_the_weights_not_a_marker(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    first = weights_checksum(other)
    (other / CACHE_MARKER).write_text(json.dumps({"weights_sha256": "0" * 64}))  # a copied marker is not trusted
    assert weights_checksum(other) == first
    weights = other / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights_checksum(other) != first  # the cached hash is bound to size and mtime


def test_weights_swapped_under_the_same_size_and_mtime_are_refused(tmp_path, tiny_model_dir, monkeypatch):
    from seal.core.models import load_model

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    st = KnowledgeStore(tmp_path / "s")
    cfg = tiny_learn_cfg()
    cfg.sampling.k = 0
    lm = load_model(str(model))
    learn(lm, st, [DOC], cfg)
    weights = model / "model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # other weights, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same modification time
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    swapped = load_model(str(model))
    assert swapped.checksum != lm.checksum
    with pytest.raises(UsageError, match="belongs to base model"):
        st.check_base(swapped.name, swapped.checksum)
    # A checksum cache fooled anyway (its entry rewritten to the swapped file's stamps): the content is
    # hashed again before the store is written.
    index = tmp_path / "cache" / "checksums.json"
    entries = json.loads(index.read_text())
    entries[str(weights.resolve())]["sha256"] = lm.checksum
    index.write_text(json.dumps(entries))
    fooled = load_model(str(model))
    assert fooled.checksum == lm.checksum
    with pytest.raises(RuntimeFailure, match="hash to .*, not .* as when they were loaded"):
        learn(fooled, st, [DOC], cfg)
    assert st.state()["versions"] == [1]


# -- bad input ----------------------------------------------------------------------------------
def test_cli_errors_are_one_line_with_documented_exit_codes(capsys):
    import typer

    def raising(exc):
        @cli_errors
        def command():
            raise exc
        return command

    cases = [(PermissionError(13, "Permission denied", "/store/state.json"), 1), (RuntimeFailure("store x is busy"), 1),
             (UsageError("no such\nthing"), 2)]
    for exc, code in cases:
        with pytest.raises(typer.Exit) as e:
            raising(exc)()
        assert e.value.exit_code == code
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: Permission denied: /store/state.json", "error: store x is busy", "error: no such thing"]


def test_model_folders_seal_cannot_read_are_one_line(tmp_path, tiny_model_dir):
    bin_only = tmp_path / "binmodel"
    shutil.copytree(tiny_model_dir, bin_only)
    (bin_only / "model.safetensors").rename(bin_only / "pytorch_model.bin")  # not a pickle: unreadable
    r = run_seal("ask", "Who?", "--model", str(bin_only), "--store", str(tmp_path / "s"), "--base")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "cannot load model" in r.stderr


def test_input_bounds(tiny_model_dir, tmp_path):
    r = run_seal("ask", "why " * 3000, "--model", str(tiny_model_dir), "--store", str(tmp_path / "s"), "--base")
    assert r.returncode == 2 and "question is too long" in r.stderr and "context of 1024 tokens" in r.stderr
    notes: list[str] = []
    chunks = chunk_text("word " * 450, 200, notes)
    assert [len(c.split()) for c in chunks] == [200, 200, 50] and "450-word stretch" in notes[0]
    doc = tmp_path / "long.txt"
    doc.write_text(("Volthaven ferry battery " * 150).strip() + "\n")
    r = run_seal("learn", str(doc), "--model", str(tiny_model_dir), "--store", str(tmp_path / "s2"), *FAST, "--k", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert "cut every 200 words" in r.stderr and "3 passages to learn into one version" in r.stderr


def test_a_run_written_before_a_new_setting_still_resumes(tiny_lm, tmp_path):
    run = tmp_path / "run"
    run_bench(bench_cfg(tmp_path), run, lm=tiny_lm)
    conf = json.loads((run / "config.json").read_text())
    del conf["inner"]["stop_loss"]  # what a folder written before stop_loss existed holds
    (run / "config.json").write_text(json.dumps(conf))
    run_bench(bench_cfg(tmp_path), run, lm=tiny_lm)  # resumes: the missing field has its default
    with pytest.raises(UsageError, match="different config .*inner"):
        run_bench(bench_cfg(tmp_path, inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=2)), run, lm=tiny_lm)


def test_a_continual_run_killed_in_the_commit_window_learns_each_passage_once(tiny_lm, tmp_path):
    from seal.bench.continual import ContinualConfig, run_continual, store_dir

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Town {i}", "context": f"Volthaven {i} supplied the ferry of town {i}.",
                                        "questions": [{"question": f"Who supplied town {i}?", "answer": f"Volthaven {i}"}]}) + "\n"
                            for i in range(3)))
    cfg = ContinualConfig(data=str(data), n=3, strategies=["stack:guard=off"], learn=tiny_learn_cfg())
    cfg.learn.sampling.k = 0
    out = tmp_path / "run"
    run_continual(cfg, out, lm=tiny_lm)
    st = KnowledgeStore(store_dir(out, "stack:guard=off", 0))
    # What a kill at step 1 between the rename of v2 and the write of state.json leaves: v2 in place
    # but unlisted, the head still v1, no record of step 1 (and nothing of step 2 yet).
    shutil.rmtree(st.root / "versions" / "v0003")
    (st.root / "state.json").write_text(json.dumps({"head": 1, "versions": [1]}))
    log = out / "trials.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:2]))  # the golden copy and step 0
    run_continual(cfg, out, lm=tiny_lm)
    assert [[d["id"] for d in m["documents"]] for m in st.manifests()] == [["p0"], ["p1"], ["p2"]]
    assert st.chain() == [1, 2, 3]
    edits = [json.loads(line) for line in log.read_text().splitlines()][1:]
    assert [(r["passage_id"], r["version"], r["resumed"]) for r in edits] == [("p0", 1, False), ("p1", 2, True), ("p2", 3, False)]


def test_garbage_lines_in_a_run_log_are_skipped_by_name_and_the_records_kept(tiny_lm, tmp_path, capsys):
    from seal.core.run_records import TrialLog

    run = tmp_path / "run"
    run_bench(bench_cfg(tmp_path), run, lm=tiny_lm)
    log = run / "trials.jsonl"
    good = [json.loads(line) for line in log.read_text().splitlines()]
    garbage = [b"5", b"\xff\xfe not UTF-8", b'{"no": "key"}', b"[" * 100_000, b'{"key": "torn', b""]
    log.write_bytes(b"\n".join([json.dumps(good[0]).encode(), *garbage[:-2], *[json.dumps(r).encode() for r in good[1:]], *garbage[-2:]]))
    r = run_seal("bench", "report", str(run))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    named = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert [line.split(" line ")[1].split()[0] for line in named] == ["2", "3", "4", "5", str(len(good) + 5)]
    capsys.readouterr()
    assert TrialLog(log).records == good  # and a resume keeps every record
    assert [json.loads(line) for line in log.read_text().splitlines()] == good
