"""The store under damage and tampering: nothing under versions/ is deleted (a version that cannot
be used goes to quarantine/ and comes back with `restore`), no link is followed out of the store,
and every damaged file is a one-line error or a marked row, never a traceback or a hang."""

import json
import os
import shutil

import pytest

from conftest import run_seal
from seal.api import Seal
from seal.core.runtime import RuntimeFailure, UsageError
from seal.core.store import KnowledgeStore


def commit(st, title, files=None):
    with st.lock():
        folder = st.new_version_dir()
        for name, data in (files or {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights " + title.encode()}).items():
            (folder / name).write_bytes(data)
        return st.commit(folder, {"documents": [{"id": title, "title": title}], "training_sequences": ["x"],
                                  "timings": {"train_seconds": 1.0}, "created": "now"})


@pytest.fixture()
def st(tmp_path):
    """A store with v1 and v2 (v2 on top of v1)."""
    st = KnowledgeStore(tmp_path / "s")
    with st.lock():
        st.init("tiny", tmp_path, "abc123")
    commit(st, "a")
    commit(st, "b")
    return st


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def v2_manifest(st, **changes):
    path = st.root / "versions" / "v0002" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, **changes}))


DAMAGES = {
    "flipped adapter": lambda st: flip(st.root / "versions" / "v0002" / "adapter_model.safetensors"),
    "garbage manifest": lambda st: (st.root / "versions" / "v0002" / "manifest.json").write_text("x"),
    "missing adapter_config.json": lambda st: (st.root / "versions" / "v0002" / "adapter_config.json").unlink(),
    "edited version field": lambda st: v2_manifest(st, version=7),
    "5001-digit parent": lambda st: (st.root / "versions" / "v0002" / "manifest.json").write_text('{"version": 2, "parent": ' + "1" * 5001 + "}"),
}


@pytest.mark.parametrize("state", ["older", "missing", "garbage"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_unlisted_version_is_quarantined_never_deleted(st, state, damage):
    DAMAGES[damage](st)
    kept = tree(st.root / "versions" / "v0002")
    state_file = st.root / "state.json"
    {"older": lambda: state_file.write_text('{"head": 1, "versions": [1]}'), "missing": state_file.unlink,
     "garbage": lambda: state_file.write_text("{torn")}[state]()
    with st.lock():
        pass
    assert st.state() == {"head": 1, "versions": [1]}
    assert not (st.root / "versions" / "v0002").exists()
    [q] = st.quarantined()
    assert q["version"] == 2 and q["name"].startswith("v0002-") and q["reason"]
    assert tree(st.root / "quarantine" / q["name"] / "v0002") == kept  # every byte kept
    [note] = [n for n in st.notes if "version 2" in n]
    assert q["name"] in note and "\n" not in note
    assert commit(st, "c") == 3  # a quarantined number is never reused, so it can come back


def test_a_repaired_version_is_restored_as_inactive(st):
    weights = st.root / "versions" / "v0002" / "adapter_model.safetensors"
    flip(weights)
    (st.root / "state.json").write_text('{"head": 1, "versions": [1]}')
    with st.lock():
        pass
    [q] = st.quarantined()
    with pytest.raises(UsageError, match=f"no version 2 .*; it is in quarantine as {q['name']}"):
        st.chain(2)
    with st.lock(), pytest.raises(RuntimeFailure, match="still cannot be used .*sha256"):
        st.restore(q["name"])
    with st.lock(), pytest.raises(UsageError, match="no quarantined version 'v0009'"):
        st.restore("v0009")
    flip(st.root / "quarantine" / q["name"] / "v0002" / "adapter_model.safetensors")  # repaired
    with st.lock():
        assert st.restore(q["name"]) == 2
    assert st.state() == {"head": 1, "versions": [1, 2]} and st.quarantined() == []
    assert not (st.root / "quarantine" / q["name"]).exists()
    with st.lock():
        st.rollback(2)
    assert st.chain() == [1, 2]


def test_a_child_of_a_quarantined_version_waits_in_quarantine_for_it(st):
    flip(st.root / "versions" / "v0001" / "adapter_model.safetensors")
    (st.root / "state.json").unlink()
    with st.lock():
        pass
    assert st.state() == {"head": 0, "versions": []} and not any((st.root / "versions").iterdir())
    q = {e["version"]: e for e in st.quarantined()}
    assert "does not match" in q[1]["reason"] and q[2]["reason"] == "its parent v1 is not in the store"
    flip(st.root / "quarantine" / q[1]["name"] / "v0001" / "adapter_model.safetensors")
    with st.lock(), pytest.raises(RuntimeFailure, match="parent v1 is not in the store; restore that first"):
        st.restore(q[2]["name"])
    with st.lock():
        st.restore(q[1]["name"])
        st.restore(q[2]["name"])
        st.rollback(2)
    assert st.chain() == [1, 2]


def test_history_lists_the_other_versions_when_a_manifest_is_damaged(st):
    commit(st, "c")
    (st.root / "versions" / "v0002" / "manifest.json").write_text(json.dumps({"version": 2}))  # no parent
    rows = Seal(store=st.root).versions()
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert [bool(r["damaged"]) for r in rows] == [False, True, False]
    assert "version 2 is damaged (manifest.json names parent None" in rows[1]["damaged"]
    assert rows[0]["titles"] == ["a"] and [r["active"] for r in rows] == [False, True, True]  # v3 -> v2, unreadable beyond
    for bad in ({"version": 2, "parent": 1, "documents": 5}, {"version": 2, "parent": "1"}, [1, 2], {"version": True, "parent": 0}):
        (st.root / "versions" / "v0002" / "manifest.json").write_text(json.dumps(bad))
        assert Seal(store=st.root).versions()[1]["damaged"]
        with pytest.raises(RuntimeFailure, match="version 2 is damaged"):
            st.adapter_dirs()


def test_a_parent_cycle_is_an_error_not_a_hang(st):
    for v, parent in ((1, 2), (2, 1)):
        path = st.root / "versions" / f"v000{v}" / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "parent": parent}))
    with pytest.raises(RuntimeFailure, match="version 1 is damaged \\(manifest.json names parent 2, not an earlier version\\)"):
        st.chain()


def test_duplicate_and_overlong_state_entries(st):
    (st.root / "state.json").write_text('{"head": 2, "versions": [1, 2, 2, 1]}')
    assert st.state() == {"head": 2, "versions": [1, 2]}
    with st.lock():
        pass
    assert json.loads((st.root / "state.json").read_text()) == {"head": 2, "versions": [1, 2]}
    assert any("more than once" in n for n in st.notes)
    (st.root / "state.json").write_text('{"head": ' + "1" * 5001 + ', "versions": [1]}')  # past Python's int-digit limit
    assert KnowledgeStore(st.root).state() == {"head": 2, "versions": [1, 2]}  # damaged: read from the folders


def test_a_store_json_of_the_wrong_shape_is_rebuilt_from_the_manifests(tmp_path):
    st = KnowledgeStore(tmp_path / "s")
    with st.lock():
        st.init("tiny", tmp_path, "abc123")
    with st.lock():
        folder = st.new_version_dir()
        (folder / "adapter_model.safetensors").write_bytes(b"w")
        st.commit(folder, {"documents": [], "base_sha256": "abc123"})
    (st.root / "store.json").write_text(json.dumps({"base": {"name": "tiny", "sha256": 5}}))
    with pytest.raises(UsageError, match="belongs to base model unknown \\(rebuilt\\) \\(abc123\\)"):
        st.check_base("other", "fff")
    with st.lock():
        pass
    assert json.loads((st.root / "store.json").read_text())["base"]["sha256"] == "abc123"
    assert list(st.root.glob("store.json.damaged-*"))


def test_the_lock_is_never_written_through_a_link(st, tmp_path):
    lock = st.root / ".lock"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cases = {"symbolic link": lambda: lock.symlink_to(victim), "dangling link": lambda: lock.symlink_to(tmp_path / "new.txt"),
             "hard link": lambda: os.link(victim, lock), "FIFO": lambda: os.mkfifo(lock), "folder": lock.mkdir}
    for what, make in cases.items():
        if lock.is_dir() and not lock.is_symlink():
            lock.rmdir()
        elif lock.exists() or lock.is_symlink():
            lock.unlink()
        make()
        with pytest.raises(RuntimeFailure, match="\\.lock is (a symbolic link|a hard link|not a plain file).*left this one untouched"):
            with st.lock():
                pass
        assert victim.read_text() == "precious" and not (tmp_path / "new.txt").exists(), what
    lock.rmdir()
    with st.lock():  # a plain lock file again
        pass


def test_store_folders_and_files_are_never_followed_out_of_the_store(st, tmp_path):
    outside = tmp_path / "outside"
    (st.root / "versions").rename(outside)
    (st.root / "versions").symlink_to(outside)
    for action in (lambda: st.lock().__enter__(), lambda: st.exists, st.adapter_dirs):
        with pytest.raises(RuntimeFailure, match="versions/ is a symbolic link"):
            action()
    (st.root / "versions").unlink()
    outside.rename(st.root / "versions")
    real_state = tmp_path / "state-elsewhere.json"
    real_state.write_text('{"head": 1, "versions": [1]}')
    (st.root / "state.json").unlink()
    (st.root / "state.json").symlink_to(real_state)
    with st.lock():  # a linked state.json counts as damaged: moved aside, rebuilt, its target untouched
        pass
    assert real_state.read_text() == '{"head": 1, "versions": [1]}' and not (st.root / "state.json").is_symlink()
    assert st.state()["versions"] == [1, 2]
    (st.root / "versions" / "v0002" / "adapter_model.safetensors").unlink()
    (st.root / "versions" / "v0002" / "adapter_model.safetensors").symlink_to("/dev/zero")  # hashing it would never end
    with pytest.raises(RuntimeFailure, match="adapter_model.safetensors is a symbolic link"):
        st.adapter_dirs(2)
    elsewhere = tmp_path / "v0003-elsewhere"  # an unlisted version folder that is a link: set aside as a link
    shutil.copytree(st.root / "versions" / "v0001", elsewhere)
    (st.root / "versions" / "v0003").symlink_to(elsewhere)
    kept = tree(elsewhere)
    with st.lock():
        pass
    [q] = st.quarantined()
    assert q["version"] == 3 and q["reason"] == "its folder is a symbolic link" and tree(elsewhere) == kept


def test_a_legacy_manifest_without_checksums_still_checks_the_adapter(tmp_path):
    import torch
    from safetensors.torch import save_file

    st = KnowledgeStore(tmp_path / "s")
    with st.lock():
        st.init("tiny", tmp_path, "abc123")
    save_file({"w": torch.ones(4, 4)}, tmp_path / "a.safetensors")
    commit(st, "a", {"adapter_config.json": b"{}", "adapter_model.safetensors": (tmp_path / "a.safetensors").read_bytes()})
    path = st.root / "versions" / "v0001" / "manifest.json"
    m = json.loads(path.read_text())
    del m["files"]  # what seal wrote before it kept checksums
    path.write_text(json.dumps(m))
    assert st.adapter_dirs() == [st.root / "versions" / "v0001"]
    assert any("without checksums" in n for n in st.notes)
    weights = st.root / "versions" / "v0001" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # torn
    with pytest.raises(RuntimeFailure, match="version 1 is damaged \\(adapter_model.safetensors is not a whole safetensors file"):
        st.adapter_dirs()


def test_cli_quarantine_is_reported_listed_and_restorable(st):
    flip(st.root / "versions" / "v0002" / "adapter_model.safetensors")
    (st.root / "state.json").write_text('{"head": 1, "versions": [1]}')
    r = run_seal("rollback", "1", "--store", str(st.root))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    [warning] = [line for line in r.stderr.splitlines() if "version 2" in line]
    assert warning.startswith("warning: version 2 cannot be used") and "quarantine" in warning
    hist = json.loads(run_seal("history", "--store", str(st.root), "--json").stdout)
    [q] = hist["quarantined"]
    assert q["version"] == 2 and "sha256" in q["reason"]
    r = run_seal("history", "--store", str(st.root))
    assert f"{q['name']}  version 2:" in r.stdout and "seal restore NAME" in r.stdout
    r = run_seal("restore", q["name"], "--store", str(st.root))
    assert r.returncode == 1 and "still cannot be used" in r.stderr and "Traceback" not in r.stderr


def test_cli_store_option_coercions_are_errors(tmp_path):
    r = run_seal("history", "--store", "")
    assert r.returncode == 2 and "empty path" in r.stderr
    r = run_seal("rollback", "1" * 5001, "--store", str(tmp_path / "s"))  # past Python's int-digit limit
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "s").exists()
    r = run_seal("ask", "Who?", "--store", str(tmp_path / "TYPO"))  # before any model is loaded
    assert r.returncode == 2 and "no knowledge store at" in r.stderr and "--base" in r.stderr
    r = run_seal("export", "--out", str(tmp_path / "m"), "--store", str(tmp_path / "TYPO"))
    assert r.returncode == 2 and "no knowledge store at" in r.stderr and not (tmp_path / "m").exists()
    assert not (tmp_path / "TYPO").exists()
