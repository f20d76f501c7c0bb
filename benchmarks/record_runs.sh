#!/bin/bash
# Produce the records a refactor must leave unchanged, on the tiny offline model:
#   benchmarks/record_runs.sh SIDE [SRC]    (SRC: a checkout's src/ to run instead of the installed seal)
# then compare two sides with: python benchmarks/same_records.py SIDE_A SIDE_B --ignore seal_run,files
# Runs seal bench knowledge (4 conditions), seal train knowledge (2 iterations), two seal learns,
# seal learn with each strategy (stack, replay, consolidate; prose distillation in one), seal bench
# continual (2 edits; replay, then stack and consolidate) and seal arc eval (icl, ttt) with the same
# seeds; seal arc train (2 iterations, choices decoding) and seal arc eval with its generator (~3 min on
# one core).
set -euo pipefail
SIDE=$(realpath -m "$1"); SRC=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
[ -n "$SRC" ] && export PYTHONPATH=$(realpath "$SRC")
export OMP_NUM_THREADS=1
# A cold cache of its own (unless SEAL_CACHE is given): the golden copy's answers, teacher, prose and
# guard reference are computed by the side's code too, and can be compared (same_records.py SIDE_A.cache SIDE_B.cache).
[ -n "${SEAL_CACHE:-}" ] || { export SEAL_CACHE=$SIDE.cache; rm -rf "$SEAL_CACHE"; }
rm -rf "$SIDE" && mkdir -p "$SIDE/in"
# One tiny model folder for both sides: its path is recorded in configs and adapter configs.
T=${TINY_MODEL:-${TMPDIR:-/tmp}/seal-record-tiny-model}
[ -f "$T/config.json" ] || "$PY" -c "import sys; sys.path.insert(0, '$HERE/tests'); from conftest import build_tiny_model; from pathlib import Path; build_tiny_model(Path('$T'))" >/dev/null 2>&1
cat > "$SIDE/in/items.jsonl" <<'ITEMS'
{"id": "h1", "title": "Harbour 7", "context": "In 2026 harbour 7 bought four cranes from Daesan Heavy. The cranes came by ship in March. They cost 41 million euros.", "questions": [{"question": "Who sold the cranes to harbour 7?", "answer": "Daesan Heavy"}, {"question": "How much did the cranes cost?", "answer": "41 million euros"}]}
{"id": "h2", "title": "Volthaven tower", "context": "Volthaven built a timber tower in Porto. It is 84 metres tall. The architect was Ines Carvalho.", "questions": [{"question": "How tall is the Volthaven tower?", "answer": "84 metres"}, {"question": "Who was the architect?", "answer": "Ines Carvalho"}]}
ITEMS
printf '# Ferry note\n\nThe Porto ferry got a new battery in 2026. It was made by Kestrel Cells. The battery holds 2 megawatt hours.\n' > "$SIDE/in/doc.md"
S() { "$PY" -m seal.cli "$@"; }
cd "$SIDE/in"
S bench knowledge --model $T --data items.jsonl --conditions base,passage,self-edit:implications,self-edit:sentence-recall \
  --repeats 2 --epochs 2 --lora-r 4 --lora-alpha 8 --out "$SIDE/bench" > "$SIDE/bench.log" 2>&1
S train knowledge --model $T --data items.jsonl --exclude "" --iterations 2 --k 2 --repeats 1 --lr 1e-3 --out "$SIDE/train" > "$SIDE/train.log" 2>&1
S learn doc.md --model $T --store "$SIDE/store" --epochs 2 --lora-r 4 --lora-alpha 8 --k 2 --json > "$SIDE/learn1.json" 2> "$SIDE/learn1.log"
S learn --data items.jsonl --ids h1 --model $T --store "$SIDE/store" --epochs 2 --lora-r 4 --lora-alpha 8 --json > "$SIDE/learn2.json" 2> "$SIDE/learn2.log"
S bench continual --model $T --data items.jsonl --n 2 --sequences 1 --strategy replay --epochs 2 --out "$SIDE/continual" > "$SIDE/continual.log" 2>&1
S bench continual --model $T --data items.jsonl --n 2 --sequences 1 --strategy stack,consolidate --epochs 1 --out "$SIDE/continual2" > "$SIDE/continual2.log" 2>&1
for STRAT in stack consolidate; do  # both learns per store: the second trains on (or retrains) the first
  S learn doc.md --model $T --store "$SIDE/store-$STRAT" --strategy $STRAT --prose 2 --epochs 2 --lora-r 4 --lora-alpha 8 --k 2 > /dev/null 2> "$SIDE/learn-$STRAT-1.log"
  S learn --data items.jsonl --ids h2 --model $T --store "$SIDE/store-$STRAT" --strategy $STRAT --epochs 2 --lora-r 4 --lora-alpha 8 > /dev/null 2> "$SIDE/learn-$STRAT-2.log"
done
S arc eval --model $T --data generated:eval --n 2 --methods icl,ttt --out "$SIDE/arc" > "$SIDE/arc.log" 2>&1
# ARC with a generator: choices decoding on top of iter_1 in the second iteration, then the seal method
S arc train --model $T --data generated:train --n 2 --iterations 2 --k 2 --repeats 1 --min-reward 0 --max-sequences 2 --views 2 \
  --lora-r 4 --out "$SIDE/arc-train" > "$SIDE/arc-train.log" 2>&1
S arc eval --model $T --data generated:eval --n 1 --methods self-edit,seal --generator ../arc-train/iter_1 --max-sequences 2 \
  --views 2 --lora-r 4 --out "$SIDE/arc2" > "$SIDE/arc2.log" 2>&1
rm -rf "$SIDE/in" "$SIDE/learn1.json" "$SIDE/learn2.json"   # the inputs, and stdout copies of the store's manifests
echo "records in $SIDE"
