"""Is a self-edit line faithful to its passage, and does the self-edit cover the passage?

A small model's self-edits invent names and numbers (issue 6). These checks are cheap, model-free
and run on every self-edit line:

- **facts** of a text: numbers (``1,200`` == ``1200``, and number words such as "twelve") and
  names (capitalised words that are not common function words, so a sentence-initial "The" is
  not a name): what a small model invents;
- **key terms**: facts plus long words (9+ letters), a stand-in for rare words;
- **faithfulness** of a line: the share of its facts that occur in the source (title + passage),
  case-insensitive, a trailing possessive or plural "s" ignored. Long words are left out here: a
  faithful paraphrase may say "significant"; a line without facts has no score and is kept;
- **coverage** of a self-edit: the share of the passage's sentences (those with key terms) that
  some kept line is about: the line shares at least two of the sentence's key terms (one, if the
  sentence has only one).

Sentences come from pysbd, a rule-based splitter that knows abbreviations ("Dr.", "St.", "Inc."),
initials and closing quotes; a regex split at every ". " cut 9 of the 48 bundled passages after
"Dr." or "St." and missed a break after a closing quote (issue 18). The sentence self-edit formats
prompt once per sentence, so the split decides what they train on.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pysbd

_TOKEN = re.compile(r"\d[\d,.]*\d|\d|[A-Za-z][A-Za-z'\u2019-]*")
LONG_WORD = 9
# Capitalised at a sentence start without being a name.
_COMMON = frozenset("""
a an the this that these those it its it's they their them there then than he she his her we our you your i
in on at by for from to of with without into onto over under after before during since until about above
and or but nor so yet if when while because although though as also not no yes all any each every both
some many most more much few several other another such same what which who whom whose where why how
is are was were be been being has have had do does did will would can could should may might must shall
first second third new next last q
""".split())
_NUMBER_WORDS = frozenset("""
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
billion trillion dozen half
""".split())


def _norm(token: str) -> str:
    t = token.lower().replace("\u2019", "'")
    if t[0].isdigit():
        return t.replace(",", "").rstrip(".")
    for suffix in ("'s", "s'", "'"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
        t = t[:-1]
    return t


def key_terms(text: str, long_words: bool = True) -> set[str]:
    """Numbers and names (the facts); with `long_words`, also words of LONG_WORD+ letters."""
    terms = set()
    for tok in _TOKEN.findall(text):
        low = tok.lower()
        if tok[0].isdigit() or low in _NUMBER_WORDS:
            terms.add(_norm(tok))
        elif low in _COMMON:
            continue
        elif tok[0].isupper() or (long_words and len(tok) >= LONG_WORD):
            terms.add(_norm(tok))
    return terms


def _vocabulary(text: str) -> set[str]:
    return {_norm(t) for t in _TOKEN.findall(text)}


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)  # clean=False: sentences are verbatim substrings


@lru_cache(maxsize=1024)  # coverage splits the same passage once per self-edit
def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in _segmenter().segment(text) if s.strip())


def sentences(passage: str) -> list[str]:
    """The passage's sentences, verbatim and in order."""
    passage = passage.strip()
    return list(_split(passage)) if passage else []


def coverage(lines: list[str], passage: str) -> float | None:
    targets = [key_terms(s) for s in sentences(passage)]
    targets = [t for t in targets if t]
    if not targets:
        return None
    line_terms = [key_terms(line) for line in lines]
    covered = sum(any(len(t & lt) >= min(2, len(t)) for lt in line_terms) for t in targets)
    return covered / len(targets)


def check_lines(lines: list[str], title: str, passage: str, min_faithfulness: float | None = None) -> dict:
    """Scores of a self-edit's lines against its source; lines below `min_faithfulness` are dropped.

    Returns {"kept", "dropped" (line, score), "faithfulness" (None if no line states a fact),
    "coverage" (of the kept lines), "filter_rate" (share dropped)}."""
    vocab = _vocabulary(f"{title}\n{passage}")
    kept, dropped, found, total = [], [], 0, 0
    for line in lines:
        terms = key_terms(line, long_words=False)
        hits = len(terms & vocab)
        found, total = found + hits, total + len(terms)
        score = hits / len(terms) if terms else None
        if min_faithfulness is not None and score is not None and score < min_faithfulness:
            dropped.append((line, score))
        else:
            kept.append(line)
    return {
        "kept": kept,
        "dropped": dropped,
        "faithfulness": round(found / total, 4) if total else None,  # micro over the facts of all lines
        "coverage": None if (c := coverage(kept, passage)) is None else round(c, 4),
        "filter_rate": round(len(dropped) / len(lines), 4) if lines else 0.0,
    }
