"""Inputs: SEAL-format datasets (JSON list or JSONL), the bundled `fresh-facts` set, and the
user's own .txt/.md documents split into passage-sized chunks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .faithfulness import sentences
from .runtime import SealError, sha256_text

BUNDLED = {"fresh-facts"}
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


def _parse_items(raw: list, source: str) -> list[Passage]:
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "context" not in item:
            raise SealError(f"{source}: item {i} is not an object with a 'context' field")
        qs = [Question(str(q["question"]), str(q["answer"])) for q in item.get("questions", [])]
        out.append(Passage(str(item.get("id", i)), str(item.get("title", "")), str(item["context"]), qs))
    return out


def load_dataset(spec: str) -> list[Passage]:
    """`fresh-facts[:train|eval]`, or a path to a SEAL-format JSON list or JSONL file."""
    name, _, split = spec.partition(":")
    if spec in SEAL_NAMES:
        return _load_seal(spec)
    if name in BUNDLED:
        splits = [split] if split else ["train", "eval"]
        items: list[Passage] = []
        for s in splits:
            path = _bundled_path(name, s)
            if not path.is_file():
                raise SealError(f"dataset {name!r} has no split {s!r} (splits: train, eval)")
            items += load_dataset(str(path))
        return items
    path = Path(spec)
    if not path.is_file():
        raise SealError(f"dataset not found: {spec!r} is not a file nor one of {sorted(BUNDLED)} (e.g. fresh-facts:eval)")
    text = read_text_file(path)
    try:
        if text.lstrip().startswith("["):
            raw = json.loads(text)
        else:
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise SealError(f"{path}: not valid JSON or JSONL ({e.msg} at line {e.lineno})") from e
    return _parse_items(raw, str(path))


def select(items: list[Passage], ids: list[str] | None) -> list[Passage]:
    """Items by id (or by 0-based index for files without ids)."""
    if not ids:
        return items
    by_id = {p.id: p for p in items}
    out = []
    for i in ids:
        if i in by_id:
            out.append(by_id[i])
        elif i.isdigit() and int(i) < len(items):
            out.append(items[int(i)])
        else:
            raise SealError(f"no item with id {i!r} in the dataset ({len(items)} items)")
    return out


def read_text_file(path: Path) -> str:
    """UTF-8 text or a one-line SealError (missing, binary, not UTF-8)."""
    if not path.exists():
        raise SealError(f"file not found: {path}")
    if not path.is_file():
        raise SealError(f"not a file: {path}")
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise SealError(f"binary file, expected UTF-8 text: {path}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SealError(f"not UTF-8 text: {path} (byte {e.start})") from e


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def chunk_text(text: str, max_words: int) -> list[str]:
    """Split on blank lines, then pack paragraphs (or sentences of long ones) up to max_words."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para.split()) <= max_words:
            pieces.append(para)
        else:
            pieces += sentences(para)
    chunks, current = [], []
    for piece in pieces:
        if current and len(" ".join(current + [piece]).split()) > max_words:
            chunks.append(" ".join(current))
            current = []
        current.append(piece)
    if current:
        chunks.append(" ".join(current))
    return chunks


def load_document(path: Path, max_words: int = 200) -> list[Passage]:
    """A .txt/.md file as passages; title = first Markdown heading, else the file name."""
    if path.suffix.lower() not in (".txt", ".md", ".markdown", ".text"):
        if path.exists():
            raise SealError(f"unsupported file type {path.suffix or '(none)'}: {path} (expected .txt or .md)")
    text = read_text_file(path)
    title, body = path.stem.replace("_", " ").replace("-", " "), []
    found = False
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m and not found:
            title, found = m.group(1), True
            continue
        body.append(m.group(1) if m else line)
    chunks = chunk_text("\n".join(body), max_words)
    if not chunks:
        raise SealError(f"empty document: {path}")
    n = len(chunks)
    return [Passage(f"{path.name}#{i + 1}" if n > 1 else path.name, title, c) for i, c in enumerate(chunks)]
