#!/usr/bin/env bash
# Issue 8's side-by-side: configs/quick_cpu.py beside the official PyTorch pix2pix colorization
# recipe (U-Net + 70x70 PatchGAN, 15 min L1 then 15 min BCE + 100 L1, Adam 2e-4, 64 px, batch 16),
# in one run on this machine, both trained on the same photos and scored by the same
# `colorjax.evaluate` on the same held-out photos (20 % by the path hash; neither saw them),
# each colorized at its training size (64 px) with its ab laid over the photo's own L.
#     bash benchmarks/quick_cpu_vs_torch.sh            # ~65 min on 2 cores; OUT=runs/vs_torch
# A quick_cpu workdir trained alone just before can be copied to $OUT/colorjax first: training
# then finds it finished and the script only scores it (how docs/results.md's 2026-11-30 run was made).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}  # python3: a machine without make install
OUT=${OUT:-runs/vs_torch}
MINUTES=${MINUTES:-15}                  # per PyTorch phase
CJ_FLAGS=${CJ_FLAGS:-}                  # extra colorjax.train flags (a smoke run: a few steps)
DIRS=(../shared/data/ade20k ../shared/data/imagenet_sample)
SOURCE=folder:${DIRS[0]},folder:${DIRS[1]}
mkdir -p "$OUT"
log() { echo "== $* ($(date -u +%FT%TZ))" | tee -a "$OUT/summary.md"; }

log "PyTorch pix2pix: $MINUTES min L1 + $MINUTES min GAN"
$PY benchmarks/torch_pix2pix.py train --data "${DIRS[0]}" --data "${DIRS[1]}" --image-size 64 \
  --batch-size 16 --l1-minutes "$MINUTES" --gan-minutes "$MINUTES" --eval-fraction 0.2 \
  --out "$OUT/torch" > "$OUT/torch.log" 2>&1
PYTHONPATH=. $PY -c "from colorjax.data import sources
print(*sources.resolve('$SOURCE', 'eval', 0.2).files, sep='\n')" 2>/dev/null > "$OUT/held_out.txt"
for phase in l1 gan; do
  xargs -d "\n" -a "$OUT/held_out.txt" $PY benchmarks/torch_pix2pix.py colorize --short-side 64 \
    --checkpoint "$OUT/torch/$phase.pt" --out "$OUT/torch_$phase" > /dev/null
done

log "colorjax configs/quick_cpu.py"
start=$(date +%s)
$PY -m colorjax.train --config configs/quick_cpu.py --workdir "$OUT/colorjax" $CJ_FLAGS > "$OUT/colorjax.log" 2>&1
echo "colorjax wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.md"

log "scores: 256 px centre crops of the held-out photos, RGB uint8"
score() { $PY -m colorjax.evaluate --data "$SOURCE" --split eval --eval_fraction 0.2 --overwrite "$@" 2>/dev/null \
  | grep -v "^FID not\|^wrote" | tee -a "$OUT/summary.md"; }
score --predictions "$OUT/torch_l1" --out "$OUT/torch_l1.json"
score --predictions "$OUT/torch_gan" --out "$OUT/torch_gan.json"
score --workdir "$OUT/colorjax" --out "$OUT/colorjax.json"
