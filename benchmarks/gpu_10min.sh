#!/usr/bin/env bash
# Issue 8 on one GPU: configs/gpu_10min.py trained from prepared shards of ade20k +
# imagenet_sample, then scored by `colorjax.evaluate` on the held-out split (20 % by the path
# hash; 256 px centre crops, RGB uint8) with the config's decode and with the decode of the
# 2026-11-24 runs (no prior correction, T 0.38), and a picture of bundled photos the model never
# saw (gray | colorjax | real). Prepare the shards first, where ../shared/data is:
#     python -m colorjax.prepare --source folder:../shared/data/ade20k,folder:../shared/data/imagenet_sample \
#         --out data/scenes --eval-fraction 0.2
#     DATA=data/scenes bash benchmarks/gpu_10min.sh     # RUN=runs/gpu_10min
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}  # python3: a machine without make install
RUN=${RUN:-runs/gpu_10min}
DATA=${DATA:-data/scenes}               # shards written by colorjax.prepare (configs/gpu_10min.py)
CJ_FLAGS=${CJ_FLAGS:-}                  # extra colorjax.train flags
[ -f "$DATA/manifest.json" ] || { echo "error: $DATA holds no prepared shards: run colorjax.prepare first (above)" >&2; exit 1; }
mkdir -p "$RUN"

start=$(date +%s)
$PY -m colorjax.train --config configs/gpu_10min.py --config.data.train="shards:$DATA" \
  --workdir "$RUN/train" $CJ_FLAGS > "$RUN/train.log" 2>&1 || { tail -30 "$RUN/train.log"; exit 1; }
echo "train wall: $(( $(date +%s) - start )) s" | tee "$RUN/summary.md"
grep "eval @" "$RUN/train.log" | sed 's/.*eval @/eval @/' | tee -a "$RUN/summary.md"

score() { $PY -m colorjax.evaluate --workdir "$RUN/train" --data "shards:$DATA" --split eval --overwrite "$@" \
  2> "$RUN/evaluate.err" | grep -v "^FID not\|^wrote" | tee -a "$RUN/summary.md" || { tail -5 "$RUN/evaluate.err"; exit 1; }; }
echo "latest, the config's decode:" | tee -a "$RUN/summary.md"
score --out "$RUN/latest.json"
echo "latest, the 2026-11-24 decode (prior correction 0, T 0.38):" | tee -a "$RUN/summary.md"
score --prior_correction 0 --temperature 0.38 --out "$RUN/latest_uncorrected.json"
echo "best:" | tee -a "$RUN/summary.md"
score --checkpoint best --out "$RUN/best.json"

photos=(colorjax/assets/photos/{chelsea,coffee,Garden,motorcycle_left,picosdeeuropa_by_Aitzol_Berasategi,rocket}.jpg)
$PY -m colorjax.colorize --workdir "$RUN/train" --out "$RUN/colorized" --overwrite "${photos[@]}" > /dev/null
$PY benchmarks/picture.py --out "$RUN/picture.jpg" --column "colorjax gpu_10min=$RUN/colorized" "${photos[@]}"
