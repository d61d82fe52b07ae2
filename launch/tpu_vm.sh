#!/usr/bin/env bash
# Trains colorjax on a Cloud TPU VM or pod slice, from this checkout.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [OPTIONS] [-- TRAIN_ARGS...]
#
# Commands:
#   create    create the TPU VM (a pod slice when --type has several hosts, e.g. v4-32)
#   install   copy this checkout to every worker and pip-install it there with jax[tpu], in a
#             Python 3.11 environment (~/colorjax-venv) that uv makes
#   train     start training on all workers (--worker=all) in the background
#   logs      follow the training log of one worker (--worker, default 0)
#   resume    after a preemption: recreate and reinstall the VM if it is not READY, then train
#             (training resumes from the last checkpoint in the workdir)
#   delete    delete the TPU VM
#   up        create, install and train
#
# Options (each also read from the environment variable in brackets):
#   --name NAME        TPU VM name [TPU_NAME] (colorjax)
#   --zone ZONE        zone [TPU_ZONE] (us-central2-b)
#   --type TYPE        accelerator type [TPU_TYPE] (v4-8; v4-32 = 4 hosts, v5litepod-16 = 4 hosts)
#   --version VERSION  TPU software version [TPU_VERSION] (derived from --type)
#   --project PROJECT  Google Cloud project [TPU_PROJECT] (gcloud's default)
#   --spot             create a Spot VM [TPU_SPOT=1]: much cheaper, can be preempted (then run
#                      `resume`, which recreates a preempted Spot VM as a Spot VM again)
#   --config FILE      config file in this checkout [CONFIG] (configs/pix2pix_resnet18.py)
#   --workdir DIR      checkpoints and logs [WORKDIR]; gs://BUCKET/PATH is mounted with gcsfuse
#                      on every worker, so all hosts share it and it outlives the VM
#   --data SOURCE      training photos, config.data.train [DATA] (the config's own),
#                      e.g. folder:gs://BUCKET/photos (also mounted with gcsfuse)
#   --worker N         worker whose log `logs` follows (0)
#   --dry-run          print every command without running it
# Every command is printed (after "+ ") before it runs. Arguments after `--` go to
# `python -m colorjax.train` (e.g. -- --config.total_steps=20000).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${TPU_NAME:-colorjax}"
ZONE="${TPU_ZONE:-us-central2-b}"
TYPE="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-}"
PROJECT="${TPU_PROJECT:-}"
CONFIG="${CONFIG:-configs/pix2pix_resnet18.py}"
WORKDIR="${WORKDIR:-}"
DATA="${DATA:-}"
SPOT="${TPU_SPOT:-}"
WORKER=0
DRY_RUN=""
TRAIN_ARGS=()
LOG='~/colorjax-train.log'
PID='~/colorjax-train.pid'
# colorjax, jax and grain need Python >= 3.11; the TPU images' python3 is Ubuntu 22.04's 3.10,
# so install makes a 3.11 environment with uv (which fetches that Python) on every worker.
VENV='~/colorjax-venv'

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 2; }

# Prints a command after "+ ", shell-quoted so that it can be pasted.
show() {
  local out="+" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+=" $arg"; else out+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  echo "$out"
}

# Prints a command, then runs it unless --dry-run.
run() {
  show "$@"
  [[ -n "$DRY_RUN" ]] || "$@"
}

COMMAND=""
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --spot) SPOT=1 ;;
    --name) NAME="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --type) TYPE="$2"; shift ;;
    --version) VERSION="$2"; shift ;;
    --project) PROJECT="$2"; shift ;;
    --config) CONFIG="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --worker) WORKER="$2"; shift ;;
    -h|--help) usage ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$COMMAND" ]] || die "one command at a time (got $COMMAND and $1)"; COMMAND="$1" ;;
  esac
  shift
done
[[ -n "$COMMAND" ]] || usage 2

if [[ -z "$VERSION" ]]; then
  case "$TYPE" in
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -z "$PROJECT" ]] || WHERE+=(--project="$PROJECT")

# gs://BUCKET/PATH -> /mnt/gcs/BUCKET/PATH on the workers; the buckets to mount.
on_worker() { echo "${1//gs:\/\//\/mnt\/gcs\/}"; }
buckets() { grep -o 'gs://[^/,]*' <<<"$WORKDIR $DATA" | sed 's|gs://||' | sort -u || true; }

ssh_all() { run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"; }

create() {
  local extra=()
  [[ -z "$SPOT" ]] || extra+=(--spot)
  run "${TPU[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$TYPE" --version="$VERSION" "${extra[@]}"
}

install() {
  local tarball="${TMPDIR:-/tmp}/colorjax-src.tgz" setup
  run tar -czf "$tarball" --exclude=.venv --exclude=.git --exclude=runs --exclude=__pycache__ -C "$REPO" .
  run "${TPU[@]}" scp "$tarball" "$NAME:colorjax-src.tgz" "${WHERE[@]}" --worker=all
  setup='rm -rf ~/colorjax && mkdir ~/colorjax && tar -xzf ~/colorjax-src.tgz -C ~/colorjax'
  setup+=" && cd ~/colorjax && python3 -m pip install -q -U uv && rm -rf $VENV && python3 -m uv venv -q --seed --python 3.11 $VENV"
  setup+=" && $VENV/bin/python -m pip install -q -e '.[tensorboard]' 'jax[tpu]'"
  if [[ -n "$(buckets)" ]]; then
    setup+=' && echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
    setup+=' && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null'
    setup+=' && sudo apt-get -q update && sudo apt-get -q install -y gcsfuse'
  fi
  ssh_all "$setup"
}

train() {
  [[ -n "$WORKDIR" ]] || die "--workdir is required to train (gs://BUCKET/PATH to survive preemption)"
  [[ "$WORKDIR" == gs://* ]] || echo "warning: $WORKDIR is on the VM's own disk: lost with the VM, and not shared by the hosts of a pod slice" >&2
  local cmd="" bucket args
  for bucket in $(buckets); do
    cmd+="sudo mkdir -p /mnt/gcs/$bucket && sudo chown \$USER /mnt/gcs/$bucket && "
    cmd+="(mountpoint -q /mnt/gcs/$bucket || gcsfuse --implicit-dirs $bucket /mnt/gcs/$bucket) && "
  done
  args="$(printf '%q ' --config "$CONFIG" --workdir "$(on_worker "$WORKDIR")")"
  [[ -z "$DATA" ]] || args+="$(printf '%q ' "--config.data.train=$(on_worker "$DATA")")"
  (( ${#TRAIN_ARGS[@]} == 0 )) || args+="$(printf '%q ' "${TRAIN_ARGS[@]}")"
  cmd+="if [ -f $PID ] && kill -0 \$(cat $PID) 2>/dev/null; then echo \"already training (pid \$(cat $PID)); see: launch/tpu_vm.sh logs\"; "
  cmd+="else cd ~/colorjax && COLORJAX_DISTRIBUTED=1 setsid nohup $VENV/bin/python -m colorjax.train $args"
  cmd+="> $LOG 2>&1 < /dev/null & echo \$! > $PID; echo \"training started on \$(hostname), log: $LOG\"; fi"
  ssh_all "$cmd"
}

logs() { run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$WORKER" --command="tail -n 200 -F $LOG"; }

delete() { run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet; }

resume() {
  local describe=("${TPU[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state,schedulingConfig.spot)')
  local state spot
  show "${describe[@]}"
  if [[ -n "$DRY_RUN" ]]; then
    echo "# dry run: what follows is what runs when the VM is not READY (preempted or gone)"
    state=PREEMPTED
  else
    read -r state spot <<<"$("${describe[@]}" 2>/dev/null || true)"
    echo "state: ${state:-not found}${spot:+, spot: $spot}"
    [[ "${spot,,}" != true ]] || SPOT=1  # a preempted Spot VM is recreated as one
  fi
  if [[ "$state" != READY ]]; then
    [[ -z "$state" ]] || delete
    create
    install
  fi
  train
}

case "$COMMAND" in
  create) create ;;
  install) install ;;
  train) train ;;
  logs) logs ;;
  resume) resume ;;
  delete) delete ;;
  up) create; install; train ;;
  *) die "unknown command $COMMAND (see --help)" ;;
esac
