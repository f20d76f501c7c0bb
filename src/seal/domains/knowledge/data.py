"""Inputs: SEAL-format datasets (JSON list or JSONL), the bundled `fresh-facts` set, and the
user's own .txt/.md documents split into passage-sized chunks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from seal.domains.knowledge.faithfulness import sentences
from seal.core.runtime import SealError, UsageError, sha256_text

BUNDLED = {"fresh-facts"}
BUNDLED_SPLITS = ("train", "eval", "test")
# The bare name means train + eval: `test` is held out (never used to choose a recipe), so it is
# loaded only when asked for by name and nobody trains or tunes on it by accident.
DEFAULT_SPLITS = ("train", "eval")
# SEAL's own data (never committed here): ../shared/data/seal beside the project, or $SEAL_DATA.
SEAL_NAMES = {"seal-squad:eval", "seal-squad:train"}


def seal_data_dir() -> Path:
    import os

    env = os.environ.get("SEAL_DATA")
    return Path(env) if env else Path.cwd().parent / "shared" / "data" / "seal"


def _load_seal(spec: str) -> list["Passage"]:
    """seal-squad:eval = squad_val.json (shuffle it with seed 42 to get the paper's slice);
    seal-squad:train = the 199 unique SQuAD-train passages in SEAL's synthetic_data/train files."""
    root = seal_data_dir() / "knowledge-incorporation" / "data"
    if spec.endswith(":eval"):
        return load_dataset(str(root / "squad_val.json"))
    files = sorted((root / "synthetic_data" / "train").rglob("*.json"))
    if not files:
        raise SealError(f"SEAL training data not found under {root} (set SEAL_DATA to the folder holding knowledge-incorporation/)")
    seen: dict[str, Passage] = {}
    for f in files:
        for p in load_dataset(str(f)):
            seen.setdefault(p.sha256, Passage(f"seal-train-{len(seen)}", p.title, p.context, p.questions))
    return list(seen.values())


@dataclass
class Question:
    question: str
    answer: str


@dataclass
class Passage:
    """A unit of knowledge: what one self-edit is written about."""

    id: str
    title: str
    context: str
    questions: list[Question] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return sha256_text(self.context)


def _bundled_path(name: str, split: str) -> Path:
    base = resources.files("seal") / "resources" / name.replace("-", "_")
    return Path(str(base / f"{split}.jsonl"))


def check_text(value: str, what: str) -> str:
    """`value` if it is text that can be written as UTF-8; a lone surrogate (a JSON escape such as
    "\\udc80", or a byte that is not UTF-8 in a file name or a command-line argument) is refused
    here, not later as a tokenizer or encoder traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} is not valid text: character {e.start} is a lone surrogate {ascii(value[e.start])} "
                         "(a broken \\u escape, or bytes that are not UTF-8)") from None
    return value


def text_field(item: dict, key: str, where: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # an id written as a number
    if not isinstance(value, str):
        shown = "null" if value is None else f"{type(value).__name__} {value!r}"
        raise UsageError(f"{where}: '{key}' must be a string, not {shown}")
    return check_text(value, f"{where}: '{key}'")


def parse_json(text: str, where: str):
    """JSON text, or a one-line UsageError: invalid, or nested too deeply for the parser."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise UsageError(f"{where} is not usable JSON: it is nested too deeply") from None


def check_passages(passages: list["Passage"]) -> None:
    """Passages built in code (the Python API) meet what a file's items must: text title and context."""
    for p in passages:
        for key in ("title", "context"):
            text_field({key: getattr(p, key)}, key, f"passage {p.id!r}")


def _parse_items(raw: list, source: str, lines: list[int] | None = None) -> list[Passage]:
    """Items of a SEAL-format file; `lines` maps item index to its JSONL line for error messages."""
    if not isinstance(raw, list):
        raise UsageError(f"{source}: expected a JSON list of items (or JSONL, one item per line)")
    out = []
    for i, item in enumerate(raw):
        where = f"{source}: {'line ' + str(lines[i]) if lines else 'item ' + str(i)}"
        if not isinstance(item, dict) or "context" not in item:
            raise UsageError(f"{where} is not an object with a 'context' field")
        questions = item.get("questions") or []
        if not isinstance(questions, list):
            raise UsageError(f"{where}: 'questions' must be a list of {{question, answer}} objects")
        qs = []
        for j, q in enumerate(questions):
            if not isinstance(q, dict) or "question" not in q or "answer" not in q:
                raise UsageError(f"{where}: question {j} is not a {{\"question\": ..., \"answer\": ...}} object")
            qs.append(Question(text_field(q, "question", where), text_field(q, "answer", where)))
        context = text_field(item, "context", where)
        if not context.strip():
            raise UsageError(f"{where}: empty 'context'")
        out.append(Passage(text_field(item, "id", where, str(i)), text_field(item, "title", where, ""), context, qs))
    return out


def load_dataset(spec: str) -> list[Passage]:
    """`fresh-facts[:train|eval|test]` (bare: train + eval, never the held-out test), or a path to
    a SEAL-format JSON list or JSONL file."""
    name, _, split = spec.partition(":")
    if spec in SEAL_NAMES:
        return _load_seal(spec)
    if name in BUNDLED:
        if split and split not in BUNDLED_SPLITS:
            raise SealError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(BUNDLED_SPLITS)})")
        items: list[Passage] = []
        for s in [split] if split else DEFAULT_SPLITS:
            items += load_dataset(str(_bundled_path(name, s)))
        return items
    path = Path(spec)
    if not path.is_file():
        raise SealError(f"dataset not found: {spec!r} is not a file nor one of {sorted(BUNDLED)} (e.g. fresh-facts:eval)")
    text = read_text_file(path)
    if text.lstrip().startswith("["):
        return _parse_items(parse_json(text, str(path)), str(path))
    raw, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            raw.append(parse_json(line, f"{path}: line {n}"))
            lines.append(n)
    return _parse_items(raw, str(path), lines)


PAPER_SEED = 42  # the paper shuffles squad_val.json with random.seed(42) and takes the first n


def select_passages(spec: str, n: int | None, offset: int = 0) -> list[Passage]:
    """A SEAL JSON list is shuffled exactly as the paper did (random.seed(42)); others keep file order."""
    import random

    items = load_dataset(spec)
    path = Path(spec)
    if spec == "seal-squad:eval" or path.is_file() and read_text_file(path).lstrip()[:1] == "[":
        random.Random(PAPER_SEED).shuffle(items)
    return items[offset : offset + n if n else None]


def select(items: list[Passage], ids: list[str] | None) -> list[Passage]:
    """Items by id (or by 0-based index for files without ids)."""
    if not ids:
        return items
    by_id = {p.id: p for p in items}
    out = []
    for i in ids:
        if i in by_id:
            out.append(by_id[i])
        elif i.isascii() and i.isdigit() and len(i) <= 9 and int(i) < len(items):  # not int() of 5,000 digits, nor of "²"
            out.append(items[int(i)])
        else:
            raise SealError(f"no item with id {i!r} in the dataset ({len(items)} items)")
    return out


def read_text_file(path: Path) -> str:
    """UTF-8 text (without the byte-order mark some editors write first, which would otherwise
    hide a first-line heading or a JSON file's first bracket), or a one-line SealError (missing,
    binary, not UTF-8)."""
    if not path.exists():
        raise SealError(f"file not found: {path}")
    if not path.is_file():
        raise SealError(f"not a file: {path}")
    return decode_text(path.read_bytes(), str(path))


def decode_text(data: bytes, name: str) -> str:
    """A document's bytes as text, or a one-line SealError naming it (binary, not UTF-8): the one
    rule for files and uploads (`seal serve`)."""
    if b"\0" in data[:8192]:
        raise SealError(f"binary file, expected UTF-8 text: {name}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SealError(f"not UTF-8 text: {name} (byte {e.start})") from e


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def chunk_text(text: str, max_words: int, warnings: list[str] | None = None) -> list[str]:
    """Split on blank lines, then pack paragraphs (or sentences of long ones) up to max_words.
    A sentence longer than max_words (text without sentence punctuation) is cut every max_words
    words, and said so in `warnings`, rather than trained as one sequence cut short."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para.split()) <= max_words:
            pieces.append(para)
            continue
        for sentence in sentences(para):
            words = sentence.split()
            if len(words) > max_words:
                if warnings is not None:
                    warnings.append(f"a {len(words)}-word stretch without sentence punctuation was cut every {max_words} words")
                pieces += [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
            else:
                pieces.append(sentence)
    chunks, current = [], []
    for piece in pieces:
        if current and len(" ".join(current + [piece]).split()) > max_words:
            chunks.append(" ".join(current))
            current = []
        current.append(piece)
    if current:
        chunks.append(" ".join(current))
    return chunks


DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".text")


def file_title(name: str) -> str:
    """A document's title when it has no Markdown heading: its file name, words spaced."""
    return Path(name).stem.replace("_", " ").replace("-", " ")


def load_document(path: Path, max_words: int = 200, warnings: list[str] | None = None) -> list[Passage]:
    """A .txt/.md file as passages; title = first Markdown heading, else the file name."""
    if path.suffix.lower() not in DOCUMENT_SUFFIXES:
        if path.exists():
            raise SealError(f"unsupported file type {path.suffix or '(none)'}: {path} (expected .txt or .md)")
    notes: list[str] = []
    out = document_passages(read_text_file(path), path.name, file_title(path.name), max_words, notes)
    if warnings is not None:
        warnings += [f"{path}: {note}" for note in notes]
    if not out:
        raise SealError(f"empty document: {path}")
    return out


def document_passages(text: str, name: str, title: str = "", max_words: int = 200, notes: list[str] | None = None) -> list[Passage]:
    """A document's text as passages of about `max_words`; its first Markdown heading, if any, is
    the title (else `title`). Ids are `name`, or `name#1`, `name#2`... for several chunks."""
    check_text(name, f"document name {name!r}")
    check_text(title, f"document {name!r}: title {title!r}")
    check_text(text, f"document {name!r}")
    body = []
    found = False
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m and not found:
            title, found = m.group(1), True
            continue
        body.append(m.group(1) if m else line)
    chunks = chunk_text("\n".join(body), max_words, notes if notes is not None else [])
    n = len(chunks)
    return [Passage(f"{name}#{i + 1}" if n > 1 else name, title, c) for i, c in enumerate(chunks)]
