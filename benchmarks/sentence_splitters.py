"""Where sentence splitters disagree: the old regex, syntok and pysbd (seal's) on a dataset.

    pip install syntok   # only this script needs it
    python benchmarks/sentence_splitters.py --data fresh-facts
    python benchmarks/sentence_splitters.py --data seal-squad:eval --n 200

Prints every boundary that not all three splitters put (the text around it and who splits there)
and the count per group of splitters, for checking by hand which are mis-splits. Boundaries all
three agree on are not shown.
"""

from __future__ import annotations

import argparse
import re

from seal.bench.knowledge import select_passages
from seal.domains.knowledge.faithfulness import sentences as pysbd_split

# The splitter seal used before issue 18.
_REGEX = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'\u201c])")


def regex_split(text: str) -> list[str]:
    return [s.strip() for s in _REGEX.split(text.strip()) if s.strip()]


def syntok_split(text: str) -> list[str]:
    try:
        import syntok.segmenter as segmenter
    except ImportError:
        raise SystemExit("this script needs syntok: pip install syntok") from None
    # Cut the original text at token offsets: syntok's token values may differ from the text.
    return [text[s[0].offset : s[-1].offset + len(s[-1].value)].strip() for para in segmenter.analyze(text) for s in para]


def boundaries(text: str, parts: list[str]) -> set[int]:
    """Character offsets where one sentence ends and the next begins."""
    pos, out = 0, set()
    for s in parts[:-1]:
        pos = text.index(s, pos) + len(s)
        out.add(pos)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fresh-facts")
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args()
    passages = select_passages(args.data, args.n)
    splitters = {"regex": regex_split, "syntok": syntok_split, "pysbd": pysbd_split}
    counts: dict[str, int] = {}
    differing = 0
    for p in passages:
        cut = {name: boundaries(p.context, split(p.context)) for name, split in splitters.items()}
        disputed = sorted(b for b in set().union(*cut.values()) if not all(b in c for c in cut.values()))
        differing += bool(disputed)
        for b in disputed:
            who = "+".join(name for name, c in cut.items() if b in c)
            counts[who] = counts.get(who, 0) + 1
            around = f"{p.context[max(0, b - 45):b]}|{p.context[b:b + 30]}".replace("\n", " ")
            print(f"{p.id} @{b} split by {who}: ...{around}...")
    print(f"{len(passages)} passages, {differing} with a disputed boundary; boundaries by who splits there: {counts}")


if __name__ == "__main__":
    main()
