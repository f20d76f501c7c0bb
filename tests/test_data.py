import json

import pytest

from seal.domains.knowledge.data import chunk_text, load_dataset, load_document, select
from seal.core.runtime import SealError


@pytest.mark.parametrize("split", ["train", "eval"])
def test_fresh_facts_meets_its_contract(split):
    items = load_dataset(f"fresh-facts:{split}")
    assert len(items) >= 20
    for p in items:
        assert 120 <= len(p.context.split()) <= 250, p.id
        assert len(p.questions) == 5, p.id
        for q in p.questions:
            assert q.answer in p.context, (p.id, q.answer)
            assert q.question.endswith("?")


def test_fresh_facts_splits_are_disjoint():
    train = {p.title for p in load_dataset("fresh-facts:train")}
    eval_ = {p.title for p in load_dataset("fresh-facts:eval")}
    assert not train & eval_
    assert len(load_dataset("fresh-facts")) == len(train) + len(eval_)


def test_seal_json_and_jsonl(tmp_path):
    items = [{"title": "T", "context": "C", "questions": [{"question": "Q?", "answer": "A"}]}]
    (tmp_path / "a.json").write_text(json.dumps(items))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({**i, "id": "x"}) for i in items))
    a, b = load_dataset(str(tmp_path / "a.json")), load_dataset(str(tmp_path / "b.jsonl"))
    assert a[0].id == "0" and b[0].id == "x" and a[0].questions[0].answer == "A"
    assert select(b, ["x"]) == b and select(a, ["0"]) == a
    with pytest.raises(SealError, match="no item with id"):
        select(a, ["nope"])


def test_unknown_dataset_and_bad_json(tmp_path):
    with pytest.raises(SealError, match="dataset not found"):
        load_dataset("fresh-fact:eval")
    with pytest.raises(SealError, match="no split"):
        load_dataset("fresh-facts:test")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(SealError, match="not valid JSON"):
        load_dataset(str(tmp_path / "bad.json"))


def test_document_title_and_chunks(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Harbour report\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 80 for i in range(5)))
    chunks = load_document(doc, max_words=200)
    assert {c.title for c in chunks} == {"Harbour report"}
    assert len(chunks) == 3 and all(len(c.context.split()) <= 200 for c in chunks)
    assert chunks[0].id == "notes.md#1"
    plain = tmp_path / "city_news.txt"
    plain.write_text("Short text about a ferry.")
    (p,) = load_document(plain)
    assert p.title == "city news" and p.id == "city_news.txt"


def test_long_paragraph_is_split_on_sentences():
    text = " ".join(f"Sentence number {i} has five words." for i in range(100))
    chunks = chunk_text(text, 50)
    assert len(chunks) > 5 and all(len(c.split()) <= 50 for c in chunks)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.txt", None, "file not found"),
        ("empty.txt", b"", "empty document"),
        ("blank.md", b"# Only a title\n\n  \n", "empty document"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00", "binary file"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
        ("report.pdf", b"%PDF-1.4", "unsupported file type"),
    ],
)
def test_bad_documents_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SealError, match=message) as e:
        load_document(path)
    assert "\n" not in str(e.value)


SEAL_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "seal"


@pytest.mark.skipif(not SEAL_ROOT.exists(), reason="../shared/data/seal not present")
def test_seal_training_passages_by_name(monkeypatch):
    monkeypatch.setenv("SEAL_DATA", str(SEAL_ROOT))
    train = load_dataset("seal-squad:train")
    assert len(train) == 199 and len({p.context for p in train}) == 199
    evals = {p.context for p in load_dataset("seal-squad:eval")}
    assert not evals & {p.context for p in train}
