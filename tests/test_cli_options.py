"""Options of the `seal` command: --version and --verbose, bounds checked before a model loads, Ctrl-C at start-up."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import run_seal

import seal


def test_version_prints_the_installed_package_version():
    r = run_seal("--version", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"seal {version('seal')}\n" == f"seal {seal.__version__}\n"


# A command that warns the way transformers and peft do; it is added to the real app in a fresh process.
_WARN = """
import warnings
from seal.cli import commands as cli

@cli.app.command("warn")
def _warn():
    warnings.warn("a library warning", FutureWarning)

cli.main()
"""


def _run_warn(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WARN, *options, "warn"], capture_output=True, text=True, timeout=120)


def test_library_warnings_are_silenced_unless_verbose():
    quiet, verbose = _run_warn(), _run_warn("--verbose")
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "a library warning" not in quiet.stderr
    assert "FutureWarning: a library warning" in verbose.stderr


# -- options checked before any model loads or any folder is written -------------------------------
def _bad_options(tmp: Path) -> dict[str, tuple[list[str], str]]:
    doc, full, deep = tmp / "doc.md", tmp / "full", tmp / "deep.json"
    doc.write_text("# Ferry\n\nVolthaven supplied the batteries.\n")
    full.mkdir()
    (full / "x").write_text("x")
    deep.write_text("[" * 100_000 + "]" * 100_000)
    out = ["--out", str(tmp / "run")]
    teacher = ["bench", "knowledge", *out, "--conditions", "teacher", "--n", "1"]
    return {
        "learn lr": (["learn", str(doc), "--lr", "1e38"], "inner loop: lr = 1e+38 is out of range (allowed: 0 < lr <= 1)"),
        "learn max-new-tokens": (["learn", str(doc), "--max-new-tokens", "100000000"], "max_new_tokens = 100000000 is out of range"),
        "learn lora-r": (["learn", str(doc), "--lora-r", "100000000"], "lora_r = 100000000 is out of range (allowed: 1 to 1024)"),
        "learn k": (["learn", str(doc), "--k", "1000"], "sampling: k = 1000 is out of range (allowed: 0 to 64)"),
        "learn top-p": (["learn", str(doc), "--top-p", "0"], "top_p = 0.0 is out of range"),
        "learn no modules": (["learn", str(doc), "--target-modules", ","], "target_modules must name the modules"),
        "ask base and version": (["ask", "Who?", "--base", "--version", "1"], "give --base or --version 1, not both"),
        "eval base and version": (["eval", "fresh-facts:eval", "--base", "--version", "2"], "give --base or --version 2, not both"),
        "ask surrogate": (["ask", "Who \udcff?"], "the question is not valid text: character 4 is a lone surrogate"),
        "export into a full folder": (["export", "--out", str(full)], "exists and is not empty"),
        "demo format": (["demo", "--format", "summary", "--store", str(tmp / "demo")], "unknown self-edit format 'summary'"),
        "bench lr": (["bench", "knowledge", *out, "--lr", "5"], "lr = 5.0 is out of range"),
        "teacher file": ([*teacher, "--teacher-file", str(deep)], "deep.json is not usable JSON: it is nested too deeply"),
        "teacher format": ([*teacher, "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-name", "t", "--teacher-format",
                            "sentence-recall"], "teacher format 'sentence-recall' prompts once per sentence"),
        "strategy r": (["bench", "continual", *out, "--strategy", "stack:r=100000000"],
                       "strategy 'stack:r=100000000': inner loop: lora_r = 100000000 is out of range"),
        "strategy lr": (["bench", "continual", *out, "--strategy", "stack,replay:lr=2"], "strategy 'replay:lr=2': inner loop: lr = 2.0"),
        "continual lr": (["bench", "continual", *out, "--lr", "3"], "bench continual: lr = 3.0 is out of range"),
        "train lr": (["train", "knowledge", *out, "--lr", "-1"], "inner loop: lr = -1.0 is out of range"),
        "train k": (["train", "knowledge", *out, "--k", "1000"], "ReST-EM: k = 1000 is out of range"),
        "train data": (["train", "knowledge", *out, "--data", str(tmp / "nope.jsonl")], "dataset not found"),
        "arc lora-r": (["arc", "eval", *out, "--lora-r", "100000"], "arc: --lora-r = 100000 is out of range"),
        "arc data": (["arc", "train", *out, "--data", "nope"], "unknown ARC data 'nope'"),
    }


BAD_OPTIONS = [
    "learn lr", "learn max-new-tokens", "learn lora-r", "learn k", "learn top-p", "learn no modules", "ask base and version",
    "eval base and version", "ask surrogate", "export into a full folder", "demo format", "bench lr", "teacher file",
    "teacher format", "strategy r", "strategy lr", "continual lr", "train lr", "train k", "train data", "arc lora-r", "arc data",
]


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_options_are_one_line_before_any_model_loads_or_folder_is_written(tmp_path, monkeypatch, case):
    from typer.testing import CliRunner

    from seal.cli import app

    (tmp_path / "no-model").mkdir()  # loading it fails: an error about it would mean the model was loaded first
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "store"))
    args, message = _bad_options(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    command, rest = (args[:2], args[2:]) if args[0] in ("bench", "train", "arc") else (args[:1], args[1:])
    r = CliRunner().invoke(app, [*command, "--model", str(tmp_path / "no-model"), *rest])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (r.stderr, r.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, run folder or demo store


# -- Ctrl-C during start-up ------------------------------------------------------------------------
# The interrupt is raised at a chosen point: when a module is first imported (a finder that raises).
_INTERRUPT = """
import sys

at = sys.argv[1]

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == at:
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
sys.argv = ["seal", *sys.argv[2:]]
from seal.cli import main
main()
"""


@pytest.mark.parametrize("module,extra", [
    ("typer", []),  # while the command line's own modules load, before main() runs
    ("transformers", []),  # in the global options' callback, where Typer exits 130 silently
    ("safetensors", ["--verbose"]),  # while the command loads the model
])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(tiny_model_dir, tmp_path, module, extra):
    args = [*extra, "ask", "Who?", "--base", "--model", str(tiny_model_dir), "--store", str(tmp_path / "s")]
    r = subprocess.run([sys.executable, "-c", _INTERRUPT, module, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr == "interrupted\n", r.stderr


# Ctrl-C pressed once the command has ended, while the interpreter exits (where torch's exit handlers
# would raise the KeyboardInterrupt): the command's output is all there, and nothing else is printed.
_INTERRUPT_AT_EXIT = """
import os, signal, sys, time
sys.argv = ["seal", "--version"]
from seal.cli import main
try:
    main()
except SystemExit:
    pass
os.kill(os.getpid(), signal.SIGINT)
time.sleep(10)
print("not interrupted")
"""


def test_ctrl_c_after_the_command_ended_ends_the_process_silently_with_its_output_kept():
    r = subprocess.run([sys.executable, "-c", _INTERRUPT_AT_EXIT], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (-2, f"seal {seal.__version__}\n", "")


def test_every_setting_of_a_learn_is_bounded_and_nan_is_out_of_range(tmp_path):
    import dataclasses

    from seal.bench.continual import ContinualConfig, run_continual
    from seal.core.config import GuardConfig, InnerLoopConfig, LearnConfig, SamplingConfig
    from seal.core.runtime import SealError, UsageError
    from seal.learn import check_config

    nan = float("nan")
    bad = [dict(inner=InnerLoopConfig(**kw)) for kw in (
        {"lr": nan}, {"lr": 2.0}, {"lora_r": 0}, {"lora_r": 2048}, {"lora_r": 8.5}, {"epochs": 10**6}, {"stop_loss": nan},
        {"lora_alpha": float("inf")}, {"target_modules": ("",)})]
    bad += [dict(sampling=SamplingConfig(**kw)) for kw in ({"k": 65}, {"max_new_tokens": 5000}, {"top_p": nan}, {"temperature": nan})]
    bad += [dict(guard=GuardConfig(perplexity_ratio=nan)), dict(anchor_topk=10**6), dict(anchor_weight=nan), dict(replay=-1),
            dict(prose=10**6), dict(replay_weight=1e9), dict(anchors="8")]
    for change in bad:
        with pytest.raises(UsageError, match="out of range|must name") as e:
            check_config(dataclasses.replace(LearnConfig(), **change))
        assert "\n" not in str(e.value)
    check_config(LearnConfig())  # the defaults pass
    for spec in ("stack:r=100000000", "replay:anchor-topk=100000000", "stack:epochs=0", "stack:alpha=1e9"):
        with pytest.raises(SealError, match=f"strategy '{spec}': .* is out of range"):
            run_continual(ContinualConfig(strategies=[spec]), tmp_path / "run")  # no model given: it would load one
        assert not (tmp_path / "run").exists()
