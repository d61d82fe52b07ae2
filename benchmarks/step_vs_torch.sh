#!/usr/bin/env bash
# colorjax's pix2pix training step beside PyTorch's, same machine, same run, same architecture
# (pix2pix U-Net, num_downs = log2(size), ngf 64, 70x70 PatchGAN), global batch 16 (BATCH).
# Appends one JSON line per measurement to benchmarks/results.jsonl. PyTorch runs in float32
# and again under torch.autocast(bfloat16) (NO_TORCH_BF16=1 skips it); colorjax runs in its default dtype
# (bfloat16 on GPU/TPU and on CPUs with AMX, float32 on other CPUs); CJ_FLAGS adds flags to it.
#     SIZES="64 256" bash benchmarks/step_vs_torch.sh
#     CJ_FLAGS=--config.dtype=float32 NO_TORCH_BF16=1 bash benchmarks/step_vs_torch.sh   # float32 both
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}  # python3: a machine without make install
for size in ${SIZES:-64 256}; do
  $PY benchmarks/torch_pix2pix.py step --image-size "$size" --batch-size "${BATCH:-16}" --steps 10 \
    | tee -a benchmarks/results.jsonl
  if [ -z "${NO_TORCH_BF16:-}" ]; then
    $PY benchmarks/torch_pix2pix.py step --image-size "$size" --batch-size "${BATCH:-16}" --steps 10 \
      --autocast-bf16 | tee -a benchmarks/results.jsonl
  fi
  $PY -m colorjax.bench step --config configs/pix2pix_unet64.py --config.image_size="$size" \
    --config.batch_size="${BATCH:-16}" --steps 10 ${CJ_FLAGS:-} 2> /tmp/colorjax_bench_step.err \
    | tee -a benchmarks/results.jsonl || { tail -5 /tmp/colorjax_bench_step.err >&2; exit 1; }
done
