#!/usr/bin/env bash
# Issue 8 on one GPU: configs/gpu_10min.py trained from prepared shards of ade20k +
# imagenet_sample, then scored by `colorjax.evaluate` on the held-out split (20 % by the path
# hash; 256 px centre crops, RGB uint8) at a few annealed-mean temperatures, and a picture of
# bundled photos the model never saw (gray | colorjax | real).
#     DATA=data/scenes bash benchmarks/gpu_10min.sh     # RUN=runs/gpu_10min
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/gpu_10min}
DATA=${DATA:-data/scenes}               # shards written by colorjax.prepare (configs/gpu_10min.py)
CJ_FLAGS=${CJ_FLAGS:-}                  # extra colorjax.train flags
TEMPERATURES=${TEMPERATURES:-0.2 0.38 0.6}
mkdir -p "$RUN"

start=$(date +%s)
$PY -m colorjax.train --config configs/gpu_10min.py --config.data.train="shards:$DATA" \
  --workdir "$RUN/train" $CJ_FLAGS > "$RUN/train.log" 2>&1 || { tail -30 "$RUN/train.log"; exit 1; }
echo "train wall: $(( $(date +%s) - start )) s" | tee "$RUN/summary.md"
grep "eval @" "$RUN/train.log" | sed 's/.*eval @/eval @/' | tee -a "$RUN/summary.md"

score() { $PY -m colorjax.evaluate --workdir "$RUN/train" --data "shards:$DATA" --split eval --overwrite "$@" \
  2>/dev/null | grep -v "^FID not\|^wrote" | tee -a "$RUN/summary.md"; }
for t in $TEMPERATURES; do
  echo "latest, T $t:" | tee -a "$RUN/summary.md"
  score --temperature "$t" --out "$RUN/latest_t$t.json"
done
echo "best:" | tee -a "$RUN/summary.md"
score --checkpoint best --out "$RUN/best.json"

photos=(colorjax/assets/photos/{chelsea,coffee,Garden,motorcycle_left,picosdeeuropa_by_Aitzol_Berasategi,rocket}.jpg)
$PY -m colorjax.colorize --workdir "$RUN/train" --out "$RUN/colorized" "${photos[@]}" > /dev/null 2>&1
$PY benchmarks/picture.py --out "$RUN/picture.jpg" --column "colorjax gpu_10min=$RUN/colorized" "${photos[@]}"
