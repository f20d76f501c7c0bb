"""Knowledge store: commits, rollback, crash recovery, locking, base identity."""

import json
import subprocess
import sys

import pytest

from seal.core.runtime import SealError
from seal.core.store import KnowledgeStore


def make_store(tmp_path):
    st = KnowledgeStore(tmp_path / "store")
    with st.lock():
        st.init("tiny", tmp_path, "abc123")
    return st


def commit(st, title):
    with st.lock():
        folder = st.new_version_dir()
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        return st.commit(folder, {"documents": [{"title": title}], "training_sequences": ["x"], "timings": {"train_seconds": 1.0}, "created": "now"})


def test_versions_chain_and_reversible_rollback(tmp_path):
    st = make_store(tmp_path)
    assert st.head == 0 and st.chain() == []
    assert [commit(st, t) for t in "abc"] == [1, 2, 3]
    assert st.chain() == [1, 2, 3] and st.manifest(3)["parent"] == 2
    with st.lock():
        st.rollback(1)
    assert st.head == 1 and st.chain() == [1]
    assert [m["version"] for m in st.manifests()] == [1, 2, 3]  # later versions kept
    assert commit(st, "d") == 4 and st.chain() == [1, 4]  # a branch on top of v1
    with st.lock():
        st.rollback(3)  # undo the rollback
    assert st.chain() == [1, 2, 3]
    with st.lock(), pytest.raises(SealError, match="no version 9"):
        st.rollback(9)
    with st.lock():
        st.rollback(0)
    assert st.adapter_dirs() == []


def test_killed_writer_leaves_previous_head(tmp_path):
    st = make_store(tmp_path)
    commit(st, "a")
    state = (st.root / "state.json").read_text()
    # What a writer killed mid-way can leave: a temp folder, and a renamed but uncommitted version.
    (st.root / "tmp" / "version-x").mkdir(parents=True)
    (st.root / "versions" / "v0002").mkdir()
    (st.root / ".state.json.999.tmp").write_text("{torn")
    assert (st.root / "state.json").read_text() == state
    assert st.head == 1 and st.chain() == [1]  # readers never see the debris
    assert commit(st, "b") == 2  # the next writer cleans up and reuses the number
    assert st.chain() == [1, 2] and st.manifest(2)["documents"][0]["title"] == "b"
    assert not (st.root / "tmp").exists() or not any((st.root / "tmp").iterdir())
    assert not (st.root / ".state.json.999.tmp").exists()


def test_second_writer_fails_clearly(tmp_path):
    st = make_store(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from seal.core.store import KnowledgeStore\n"
            f"with KnowledgeStore(Path({str(st.root)!r})).lock():\n"
            "    print('locked', flush=True); time.sleep(30)"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SealError, match=f"busy: another seal process \\(pid {holder.pid}\\)"):
            with st.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with st.lock():  # released when the holder died
        pass


def test_store_refuses_another_base(tmp_path):
    st = make_store(tmp_path)
    with pytest.raises(SealError, match="belongs to base model tiny"):
        st.check_base("other", "fff000")
    st.check_base("tiny", "abc123")
    assert json.loads((st.root / "store.json").read_text())["base"]["sha256"] == "abc123"
