#!/usr/bin/env bash
# Trains colorjax on a Cloud TPU VM or pod slice, from this checkout.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [OPTIONS] [-- TRAIN_ARGS...]
#
# Commands:
#   create    create the TPU VM (a pod slice when --type has several hosts, e.g. v4-32)
#   install   copy this checkout to every worker and pip-install it there with jax[tpu], in a
#             Python 3.11 environment (~/colorjax-venv) that uv makes
#   train     start training on all workers (--worker=all) in the background; its config,
#             workdir, data and arguments after `--` are remembered on this machine for `resume`
#   logs      follow the training log of one worker (--worker, default 0)
#   stop      stop training on all workers (SIGTERM: each saves a checkpoint first) and wait
#   resume    after a preemption: recreate and reinstall the VM if it was preempted or is gone
#             (start it if stopped), then train again with the last `train`'s arguments (options
#             given to resume replace them); training resumes from the workdir's last checkpoint.
#             It recreates the VM as it was: the type, version and Spot that gcloud reports for
#             the preempted VM, or those `create` remembered for one that is gone
#   delete    delete the TPU VM (`stop` first keeps the steps since the last checkpoint)
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
TYPE="${TPU_TYPE:-}"  # v4-8, after resume has read what create remembered
VERSION="${TPU_VERSION:-}"
PROJECT="${TPU_PROJECT:-}"
CONFIG="${CONFIG:-}"  # configs/pix2pix_resnet18.py, after resume has read what train remembered
WORKDIR="${WORKDIR:-}"
DATA="${DATA:-}"
case "${TPU_SPOT:-}" in  # 1/true/yes: a Spot VM; 0/false/no or unset: not
  1|[Tt]rue|TRUE|[Yy]es|YES) SPOT=1 ;;
  ""|0|[Ff]alse|FALSE|[Nn]o|NO) SPOT="" ;;
  *) echo "error: TPU_SPOT=$TPU_SPOT: give 1 (a Spot VM) or 0" >&2; exit 2 ;;
esac
WORKER=0
DRY_RUN=""
TRAIN_ARGS=()
# shellcheck disable=SC2088  # these ~ expand on the worker
LOG='~/colorjax-train.log'
# shellcheck disable=SC2088
PID='~/colorjax-train.pid'
# On a worker: is its training running? (Not just a live PID: a restarted VM reuses the numbers.)
# -xz: an argument that is exactly colorjax.train, not a shell whose command line mentions it.
TRAINING="[ -f $PID ] && grep -qsxzF colorjax.train /proc/\$(cat $PID)/cmdline"
# colorjax, jax and grain need Python >= 3.11; the TPU images' python3 is Ubuntu 22.04's 3.10,
# so install makes a 3.11 environment with uv (which fetches that Python) on every worker.
# shellcheck disable=SC2088
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
[[ -n "$DRY_RUN" ]] || command -v gcloud > /dev/null ||
  die "gcloud is not installed (https://cloud.google.com/sdk/docs/install); --dry-run shows what would run"

# What `train` remembers for `resume`: a preempted pod slice must train on with the same
# photos and arguments, which nothing on the recreated VM knows; and what `create` remembers:
# a VM that is gone must come back as the same slice, in the same project.
REMEMBERED="${XDG_STATE_HOME:-$HOME/.local/state}/colorjax/tpu_vm/$NAME@$ZONE.args"
REMEMBERED_VM="${REMEMBERED%.args}.vm"
GIVEN_TYPE="$TYPE" GIVEN_VERSION="$VERSION"  # given here: they beat what gcloud reports of the old VM
if [[ "$COMMAND" == resume && -f "$REMEMBERED" ]]; then
  LAST_TRAIN_ARGS=()
  # shellcheck source=/dev/null
  source "$REMEMBERED"
  CONFIG="${CONFIG:-$LAST_CONFIG}" WORKDIR="${WORKDIR:-$LAST_WORKDIR}" DATA="${DATA:-$LAST_DATA}"
  PROJECT="${PROJECT:-${LAST_PROJECT:-}}"
  (( ${#TRAIN_ARGS[@]} )) || TRAIN_ARGS=("${LAST_TRAIN_ARGS[@]}")
  echo "# the arguments of the last train (options given here replace them): $REMEMBERED"
fi
if [[ "$COMMAND" == resume && -f "$REMEMBERED_VM" ]]; then
  # shellcheck source=/dev/null
  source "$REMEMBERED_VM"
  [[ -n "$TYPE" ]] || { TYPE="$LAST_TYPE"; VERSION="${VERSION:-$LAST_VERSION}"; }  # a version goes with its type
  SPOT="${SPOT:-$LAST_SPOT}" PROJECT="${PROJECT:-$LAST_PROJECT}"
  echo "# the VM as create made it (options given here replace them): $REMEMBERED_VM"
fi
[[ "$COMMAND" != resume || -n "$WORKDIR" ]] || die "--workdir is required to resume (no train remembered one)"
CONFIG="${CONFIG:-configs/pix2pix_resnet18.py}"
TYPE="${TYPE:-v4-8}"

# The TPU software version for an accelerator type.
version_of() {
  case "$1" in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}
VERSION="${VERSION:-$(version_of "$TYPE")}"

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
  [[ -n "$DRY_RUN" ]] && return 0
  mkdir -p "$(dirname "$REMEMBERED_VM")"
  printf 'LAST_TYPE=%q\nLAST_VERSION=%q\nLAST_SPOT=%q\nLAST_PROJECT=%q\n' "$TYPE" "$VERSION" "$SPOT" "$PROJECT" > "$REMEMBERED_VM"
}

install() {
  local tarball="${TMPDIR:-/tmp}/colorjax-src.tgz" setup
  run tar -czf "$tarball" --exclude=.venv --exclude=.git --exclude=runs --exclude=__pycache__ -C "$REPO" .
  run "${TPU[@]}" scp "$tarball" "$NAME:colorjax-src.tgz" "${WHERE[@]}" --worker=all
  setup='rm -rf ~/colorjax && mkdir ~/colorjax && tar -xzf ~/colorjax-src.tgz -C ~/colorjax'
  setup+=" && cd ~/colorjax && python3 -m pip install -q -U uv && rm -rf $VENV && python3 -m uv venv -q --seed --python 3.11 $VENV"
  setup+=" && $VENV/bin/python -m pip install -q -e '.[tensorboard]' 'jax[tpu]'"
  # Always: a gs:// workdir or data may first be named at `train`, after install.
  # shellcheck disable=SC2016  # $(lsb_release) runs on the worker
  setup+=' && echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
  setup+=' && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null'
  setup+=' && sudo apt-get -q update && sudo apt-get -q install -y gcsfuse'
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
  cmd+="if $TRAINING; then echo \"already training (pid \$(cat $PID)); see: launch/tpu_vm.sh logs\"; "
  # python itself is the background job (not a subshell around `cd`), so the PID file is its.
  cmd+="else cd ~/colorjax || exit 1; echo \"=== \$(date -u) colorjax.train\" >> $LOG; "
  cmd+="COLORJAX_DISTRIBUTED=1 setsid nohup $VENV/bin/python -m colorjax.train $args>> $LOG 2>&1 < /dev/null & "
  cmd+="echo \$! > $PID; echo \"training started on \$(hostname), log: $LOG\"; fi"
  remember
  ssh_all "$cmd"
}

remember() {
  [[ -z "$DRY_RUN" ]] || return 0
  mkdir -p "$(dirname "$REMEMBERED")"
  { printf 'LAST_CONFIG=%q\nLAST_WORKDIR=%q\nLAST_DATA=%q\nLAST_PROJECT=%q\nLAST_TRAIN_ARGS=(' \
      "$CONFIG" "$WORKDIR" "$DATA" "$PROJECT"
    (( ${#TRAIN_ARGS[@]} == 0 )) || printf '%q ' "${TRAIN_ARGS[@]}"
    echo ')'; } > "$REMEMBERED"
}

stop() {
  ssh_all "if $TRAINING; then kill -TERM \$(cat $PID); for i in \$(seq 300); do $TRAINING || break; sleep 2; done; \
if $TRAINING; then echo \"still training on \$(hostname) after 10 minutes: see $LOG\"; exit 1; fi; \
echo \"stopped on \$(hostname); the end of $LOG says at which step it saved\"; else echo \"not training on \$(hostname)\"; fi"
}

logs() { run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$WORKER" --command="tail -n 200 -F $LOG"; }

delete() { run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet; }

resume() {
  local describe=("${TPU[@]}" describe "$NAME" "${WHERE[@]}"
                  --format='csv[no-heading](state,schedulingConfig.spot,acceleratorType,runtimeVersion)')
  local state="" spot="" type="" version="" answer err
  err="$(mktemp)"
  show "${describe[@]}"
  if [[ -n "$DRY_RUN" ]]; then
    echo "# dry run: what follows is what runs when the VM was preempted"
    state=PREEMPTED
  else
    if answer="$("${describe[@]}" 2>"$err")"; then
      IFS=, read -r state spot type version <<<"$answer"
    elif ! grep -q 'NOT_FOUND' "$err"; then  # gone is fine; a failing gcloud (auth, network, none installed) is not
      cat "$err" >&2; rm -f "$err"; die "could not read the state of $NAME (above); nothing was changed"
    fi
    rm -f "$err"
    echo "state: ${state:-not found}${spot:+, spot: $spot}${type:+, type: $type}${version:+, version: $version}"
    [[ "${spot,,}" != true ]] || SPOT=1  # a preempted Spot VM is recreated as one
    if [[ -n "$type" && -z "$GIVEN_TYPE" ]]; then  # and as the slice it was
      TYPE="$type"
      [[ -n "$GIVEN_VERSION" ]] || VERSION="${version:-$(version_of "$TYPE")}"
    fi
  fi
  case "$state" in
    READY) ;;
    "") create; install ;;
    PREEMPTED|TERMINATED) delete; create; install ;;
    STOPPED) run "${TPU[@]}" start "$NAME" "${WHERE[@]}" ;;  # its disk, and the install on it, are kept
    *) die "$NAME is $state: run resume again when that is over (or delete it)" ;;
  esac
  train
}

case "$COMMAND" in
  create) create ;;
  install) install ;;
  train) train ;;
  logs) logs ;;
  stop) stop ;;
  resume) resume ;;
  delete) delete ;;
  up) create; install; train ;;
  *) die "unknown command $COMMAND (see --help)" ;;
esac
