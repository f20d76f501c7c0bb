import json
import re

import pytest

from seal.domains.knowledge.data import (
    Passage, check_passages, chunk_text, document_passages, load_dataset, load_document, select,
)
from seal.domains.knowledge.self_edit import get_format
from seal.domains.knowledge.writers import StoredWriter
from seal.core.runtime import SealError, UsageError


@pytest.mark.parametrize("split", ["train", "eval", "test"])
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
    splits = {s: load_dataset(f"fresh-facts:{s}") for s in ("train", "eval", "test")}
    for key in ("title", "id", "context"):
        seen = [getattr(p, key) for items in splits.values() for p in items]
        assert len(seen) == len(set(seen)), key
    train, eval_ = splits["train"], splits["eval"]
    assert len(load_dataset("fresh-facts")) == len(train) + len(eval_)


def dateline_city(p: Passage) -> str:
    return p.context.split(",", 1)[0].strip()


def test_fresh_facts_test_split_is_new_and_held_out():
    test = load_dataset("fresh-facts:test")
    assert [p.id for p in test] == [f"ff-test-{i:03d}" for i in range(1, 25)]
    seen = load_dataset("fresh-facts:train") + load_dataset("fresh-facts:eval")
    old_cities = {dateline_city(p) for p in seen}
    old_text = " ".join(p.context for p in seen).lower()
    for p in test:
        assert re.match(r"[A-Z][A-Z ]+, \d{1,2} [A-Z][a-z]+ 2026 - ", p.context), p.id
        assert p.context.isascii(), p.id
        assert 150 <= len(p.context.split()) <= 200, p.id
        city = dateline_city(p)
        assert city not in old_cities and city.lower() not in old_text, (p.id, city)
        answers = [q.answer for q in p.questions]
        assert len(answers) == 5 and len(set(answers)) == 5, p.id
        for q in p.questions:
            assert q.answer.lower() in p.context.lower(), (p.id, q.answer)
            assert q.answer.lower() not in q.question.lower(), (p.id, q.question)
            assert city.title() in q.question, (p.id, q.question)  # answerable closed-book: names its subject
    # the bare name is train + eval: nobody trains or tunes on the held-out split by accident
    assert not {p.id for p in load_dataset("fresh-facts")} & {p.id for p in test}


def test_seal_json_and_jsonl(tmp_path):
    items = [{"title": "T", "context": "C", "questions": [{"question": "Q?", "answer": "A"}]}]
    (tmp_path / "a.json").write_text(json.dumps(items))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({**i, "id": "x"}) for i in items))
    a, b = load_dataset(str(tmp_path / "a.json")), load_dataset(str(tmp_path / "b.jsonl"))
    assert a[0].id == "0" and b[0].id == "x" and a[0].questions[0].answer == "A"
    assert select(b, ["x"]) == b and select(a, ["0"]) == a
    with pytest.raises(SealError, match="no item with id"):
        select(a, ["nope"])
    for odd in ("9" * 5001, "\u00b2"):  # int() refuses both: once a traceback
        with pytest.raises(SealError, match="no item with id"):
            select(a, [odd])


def test_unknown_dataset_and_bad_json(tmp_path):
    with pytest.raises(SealError, match="dataset not found"):
        load_dataset("fresh-fact:eval")
    with pytest.raises(SealError, match="no split 'nosuch' \\(splits: train, eval, test\\)"):
        load_dataset("fresh-facts:nosuch")
    with pytest.raises(SealError, match="no split"):  # a split names a bundled file, never a path
        load_dataset("fresh-facts:../fresh_facts/eval")
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


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    doc = tmp_path / "bom.md"
    doc.write_bytes("\ufeff# Harbour report\n\nThe harbour got two cranes.\n".encode())
    (p,) = load_document(doc)
    assert p.title == "Harbour report" and p.context == "The harbour got two cranes."
    items = tmp_path / "bom.json"
    items.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": "x", "title": "T", "context": "C"}]).encode())
    assert [x.id for x in load_dataset(str(items))] == ["x"]


@pytest.mark.parametrize("item,message", [
    ({"context": 5}, "line 1: 'context' must be a string, not int 5"),
    ({"context": float("nan")}, "line 1: 'context' must be a string, not float nan"),  # json writes it as NaN
    ({"context": "C", "title": ["T"]}, "line 1: 'title' must be a string, not list ['T']"),
    ({"context": "C", "questions": [{"question": 3, "answer": "A"}]}, "line 1: 'question' must be a string, not int 3"),
    ({"context": "C", "questions": [{"question": "Q?", "answer": 1.5}]}, "line 1: 'answer' must be a string, not float 1.5"),
    ({"context": "C", "id": True}, "line 1: 'id' must be a string, not bool True"),
    ({"context": "Volthaven \udc80 supplied the batteries."}, "line 1: 'context' is not valid text: character 10 is a lone surrogate '\\udc80'"),
])
def test_dataset_fields_that_are_not_text_are_refused_naming_the_item(tmp_path, item, message):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(item) + "\n")  # ensure_ascii: a lone surrogate goes in as its \u escape
    with pytest.raises(UsageError) as e:
        load_dataset(str(path))
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    (tmp_path / "ids.jsonl").write_text(json.dumps({"id": 7, "context": "C"}) + "\n")
    assert load_dataset(str(tmp_path / "ids.jsonl"))[0].id == "7"  # an id written as a number is still an id


def test_deeply_nested_json_is_one_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    (tmp_path / "deep.jsonl").write_text(json.dumps({"context": "C"}) + "\n" + deep + "\n")
    with pytest.raises(UsageError, match="deep.json is not usable JSON: it is nested too deeply"):
        load_dataset(str(tmp_path / "deep.json"))
    with pytest.raises(UsageError, match="deep.jsonl: line 2 is not usable JSON: it is nested too deeply"):
        load_dataset(str(tmp_path / "deep.jsonl"))
    with pytest.raises(UsageError, match="nested too deeply"):
        StoredWriter(tmp_path / "deep.json", get_format("implications"))


def test_text_that_is_not_unicode_is_refused_where_it_enters():
    with pytest.raises(UsageError, match="document name 'bad\\\\udcffname.txt' is not valid text"):
        document_passages("A ferry.", "bad\udcffname.txt")
    with pytest.raises(UsageError, match="document 'notes' is not valid text: character 2 is a lone surrogate"):
        document_passages("A \udc80 ferry.", "notes")
    with pytest.raises(UsageError, match="passage 'p': 'context' must be a string, not int 5"):
        check_passages([Passage("p", "T", 5)])


@pytest.mark.parametrize("content,message", [
    ("{}", "expected a SEAL JSON list of items with 'context' and 'completions'"),
    ("[1]", "item 0 is not an object with 'context' and 'completions'"),
    ('[{"completions": ["x"]}]', "item 0: 'context' must be a string, not null"),
    ('[{"context": ["C"], "completions": ["x"]}]', "item 0: 'context' must be a string, not list"),
    ('[{"context": "C", "completions": "x"}]', "item 0: 'completions' must be a list of strings"),
    ('[{"context": "C", "completions": [null]}]', "item 0: 'completions' must be a list of strings"),
    ('[{"context": "C", "completions": ["\\udc80"]}]', "item 0: completion 0 is not valid text"),
    ("[{", "is not valid JSON"),
])
def test_a_malformed_teacher_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "teacher.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        StoredWriter(path, get_format("implications"))


def test_a_teacher_endpoint_is_asked_passage_formats_only():
    from seal.core.config import SamplingConfig
    from seal.core.remote import ChatEndpoint
    from seal.domains.knowledge.writers import RemoteWriter

    endpoint = ChatEndpoint("http://127.0.0.1:9/v1", "t")
    RemoteWriter(endpoint, get_format("implications"), SamplingConfig())
    with pytest.raises(UsageError, match="teacher format 'sentence-recall' prompts once per sentence.*use a passage format"):
        RemoteWriter(endpoint, get_format("sentence-recall"), SamplingConfig())


def test_a_question_that_is_not_text_is_refused_before_the_tokenizer(tiny_lm):
    from seal.domains.knowledge.qa import check_question_fits

    check_question_fits(tiny_lm, "Who built it?", "Ferry")
    with pytest.raises(UsageError, match="the question is not valid text"):
        check_question_fits(tiny_lm, "Who \udc80?", None)  # Seal.ask's check: once a tokenizer TypeError
    with pytest.raises(UsageError, match="the topic is not valid text"):
        check_question_fits(tiny_lm, "Who?", "\udc80")
