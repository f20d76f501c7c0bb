"""Compare the records of two run folders (or two stores), timings aside: the check behind a
refactor that must not change behaviour.

    python benchmarks/same_records.py runs/before runs/after

Every JSON and JSONL file found in both folders is compared as data (key order and formatting do
not matter), without wall-clock and memory fields (`*seconds*`, `peak_*`, `created`, `timings`,
`memory`) and without the fields listed by --ignore; PEFT's target_modules compare as a set.
Adapter weights are compared byte for byte (sha256 of every *.safetensors in both). Prints one line per file and exits 1 if any
file differs, naming the first differing record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seal.core.runtime import sha256_file

VOLATILE = ("seconds", "peak_", "created", "timings", "memory")
UNORDERED = {"target_modules"}  # PEFT writes a set as a list in hash order


def strip(obj, ignore: set[str]):
    if isinstance(obj, dict):
        return {k: sorted(v) if k in UNORDERED and isinstance(v, list) else strip(v, ignore)
                for k, v in obj.items() if k not in ignore and not any(t in k for t in VOLATILE)}
    if isinstance(obj, list):
        return [strip(v, ignore) for v in obj]
    return obj


def load(path: Path, ignore: set[str]):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [strip(json.loads(line), ignore) for line in text.splitlines() if line.strip()]
        return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))  # executors may append in any order
    return strip(json.loads(text), ignore)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--ignore", default="", help="comma-separated keys to leave out everywhere (e.g. fields one side added)")
    args = ap.parse_args()
    ignore = {k for k in args.ignore.split(",") if k}
    names = sorted({p.relative_to(args.a) for p in args.a.rglob("*") if p.suffix in (".json", ".jsonl")}
                   & {p.relative_to(args.b) for p in args.b.rglob("*") if p.suffix in (".json", ".jsonl")})
    if not names:
        print("no JSON or JSONL file in both folders")
        return 1
    differ = 0
    for name in sorted({p.relative_to(args.a) for p in args.a.rglob("*.safetensors")} & {p.relative_to(args.b) for p in args.b.rglob("*.safetensors")}):
        same = sha256_file(args.a / name) == sha256_file(args.b / name)
        print(f"{'same    ' if same else 'DIFFERS '} {name}")
        differ += not same
    for name in names:
        a, b = load(args.a / name, ignore), load(args.b / name, ignore)
        if a == b:
            print(f"same     {name}")
            continue
        differ += 1
        if isinstance(a, list) and isinstance(b, list):
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"DIFFERS  {name}: record {first} of {len(a)} vs {len(b)}")
        else:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if isinstance(a, dict) and isinstance(b, dict) else []
            print(f"DIFFERS  {name}: {', '.join(keys) or 'content'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
