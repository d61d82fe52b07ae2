"""The Cloud TPU VM script: what it would run (--dry-run), and that it runs exactly what it prints."""

import os
import shlex
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "launch", "tpu_vm.sh")


@pytest.fixture
def fake_gcloud(tmp_path):
  """A `gcloud` first on PATH that records its arguments; `describe` answers $FAKE_STATE
  (PREEMPTED unless set; "missing": gcloud's NOT_FOUND error, "broken": another error),
  $FAKE_SPOT as the VM's schedulingConfig.spot, and $FAKE_TYPE and $FAKE_VERSION as its
  acceleratorType and runtimeVersion (v4-8, tpu-ubuntu2204-base), as csv[no-heading] does.
  Remembered arguments go under tmp_path."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.log"
  (bin_dir / "gcloud").write_text(
      '#!/usr/bin/env bash\n'
      f'printf "%q " gcloud "$@" >> {log}; echo >> {log}\n'
      'if [[ " $* " == *" describe "* ]]; then\n'
      '  case "${FAKE_STATE:-PREEMPTED}" in\n'
      '    missing) echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource not found" >&2; exit 1 ;;\n'
      '    broken) echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) PERMISSION_DENIED" >&2; exit 1 ;;\n'
      '    *) printf "%s,%s,%s,%s\\n" "${FAKE_STATE:-PREEMPTED}" "$FAKE_SPOT" "${FAKE_TYPE:-v4-8}" '
      '"${FAKE_VERSION:-tpu-ubuntu2204-base}" ;;\n'
      '  esac\n'
      'fi\n')
  (bin_dir / "gcloud").chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path),
         "XDG_STATE_HOME": str(tmp_path / "state")}
  return env, log


def launch(env, *args):
  return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


def printed(out):
  return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_the_whole_pod_slice_workflow_and_runs_nothing(fake_gcloud):
  env, log = fake_gcloud
  run = launch(env, "--dry-run", "up", "--name", "cj", "--zone", "us-central2-b", "--type", "v4-32", "--spot",
               "--workdir", "gs://bucket/runs/r18", "--data", "folder:gs://photos/all", "--",
               "--config.total_steps=1000")
  assert run.returncode == 0, run.stderr
  assert not log.exists()
  create, tar, scp, install, train = printed(run.stdout)
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cj", "--zone=us-central2-b",
                    "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
  assert tar[:2] == ["tar", "-czf"] and "--exclude=.venv" in tar
  assert scp[4:7] == ["scp", tar[2], "cj:colorjax-src.tgz"] and "--worker=all" in scp
  assert "--worker=all" in install and "uv venv -q --seed --python 3.11 ~/colorjax-venv" in install[-1]
  assert "~/colorjax-venv/bin/python -m pip install -q -e '.[tensorboard]' 'jax[tpu]'" in install[-1]
  assert "gcsfuse" in install[-1]
  command = train[-1]
  assert "--worker=all" in train and command.startswith("--command=")
  assert "gcsfuse --implicit-dirs bucket /mnt/gcs/bucket" in command
  assert "gcsfuse --implicit-dirs photos /mnt/gcs/photos" in command
  assert ("COLORJAX_DISTRIBUTED=1 setsid nohup ~/colorjax-venv/bin/python -m colorjax.train --config configs/pix2pix_resnet18.py "
          "--workdir /mnt/gcs/bucket/runs/r18 --config.data.train=folder:/mnt/gcs/photos/all "
          "--config.total_steps=1000") in command


def test_dry_run_of_logs_resume_and_delete(fake_gcloud):
  env, log = fake_gcloud
  logs = printed(launch(env, "--dry-run", "logs", "--worker", "3", "--project", "p").stdout)
  assert logs == [["gcloud", "compute", "tpus", "tpu-vm", "ssh", "colorjax", "--zone=us-central2-b",
                   "--project=p", "--worker=3", "--command=tail -n 200 -F ~/colorjax-train.log"]]
  resume = printed(launch(env, "--dry-run", "resume", "--workdir", "gs://b/w").stdout)
  # In a dry run the VM's state is unknown: it shows the path taken after a preemption.
  assert [c[4] if c[0] == "gcloud" else c[0] for c in resume] == \
      ["describe", "delete", "create", "tar", "scp", "ssh", "ssh"]
  delete = printed(launch(env, "--dry-run", "delete", "--type", "v5litepod-16").stdout)
  assert delete == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "colorjax", "--zone=us-central2-b", "--quiet"]]
  assert not log.exists()


def test_resume_runs_exactly_the_commands_it_prints(fake_gcloud, tmp_path):
  env, log = fake_gcloud
  run = launch(env, "resume", "--name", "cj", "--workdir", "gs://b/w", "--", "--config.batch_size=256")
  assert run.returncode == 0, run.stderr
  shown = [c for c in printed(run.stdout) if c[0] == "gcloud"]
  ran = [shlex.split(line) for line in log.read_text().splitlines()]
  assert ran == shown
  assert "state: PREEMPTED" in run.stdout
  assert (tmp_path / "colorjax-src.tgz").stat().st_size > 0
  assert "--spot" not in ran[2]  # [describe, delete, create, ...]


def test_resume_recreates_a_preempted_spot_vm_as_spot(fake_gcloud):
  env, log = fake_gcloud
  run = launch({**env, "FAKE_SPOT": "True"}, "resume", "--name", "cj", "--workdir", "gs://b/w")
  assert run.returncode == 0, run.stderr
  assert "state: PREEMPTED, spot: True" in run.stdout
  create = [shlex.split(line) for line in log.read_text().splitlines()][2]
  assert create[4] == "create" and create[-1] == "--spot"
  dry = printed(launch({**env, "TPU_SPOT": "1"}, "--dry-run", "resume", "--workdir", "gs://b/w").stdout)
  assert dry[2][4] == "create" and dry[2][-1] == "--spot"
  for off in ("0", "false"):  # any value meant Spot
    assert "--spot" not in printed(launch({**env, "TPU_SPOT": off}, "--dry-run", "create").stdout)[0]


def test_mistakes_are_refused_before_anything_runs(fake_gcloud, tmp_path):
  env, log = fake_gcloud
  run = launch(env, "train")
  assert run.returncode == 2 and "--workdir is required" in run.stderr
  run = launch(env, "--dry-run", "resume")  # no train remembered one: said before delete, create, install
  assert run.returncode == 2 and "--workdir is required to resume" in run.stderr and "+ " not in run.stdout
  run = launch(env, "--dry-run", "frobnicate")
  assert run.returncode == 2 and "unknown command frobnicate" in run.stderr
  run = launch(env, "--bogus", "create")
  assert run.returncode == 2 and "unknown option --bogus" in run.stderr
  run = launch({**env, "TPU_SPOT": "maybe"}, "--dry-run", "create")
  assert run.returncode == 2 and "TPU_SPOT=maybe: give 1 (a Spot VM) or 0" in run.stderr
  assert not log.exists()
  # Without gcloud: said, not taken for a VM that is gone (bash's "gcloud: command not found").
  tools = tmp_path / "no_gcloud"  # every program on PATH but gcloud (it shares /usr/bin with bash)
  tools.mkdir()
  for folder in reversed(os.environ["PATH"].split(os.pathsep)):
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
      if name != "gcloud":
        (tools / name).unlink(missing_ok=True)
        (tools / name).symlink_to(os.path.join(folder, name))
  run = launch({**env, "PATH": str(tools)}, "resume", "--workdir", "gs://b/w")
  assert run.returncode == 2 and "gcloud is not installed" in run.stderr and "create" not in run.stdout


def ran(log):
  return [shlex.split(line) for line in log.read_text().splitlines()]


def test_resume_trains_with_what_the_last_train_was_given(fake_gcloud):
  """A recreated VM knows nothing of the run: resume repeats train's data and arguments."""
  env, log = fake_gcloud
  env = {**env, "WORKDIR": "gs://b/w"}
  assert launch(env, "train", "--name", "cj", "--data", "folder:gs://p/all", "--config", "configs/quick_cpu.py",
                "--", "--config.batch_size=256", "--config.total_steps=9 000").returncode == 0
  first = ran(log)[-1][-1]
  log.unlink()
  run = launch(env, "resume", "--name", "cj")
  assert run.returncode == 0, run.stderr
  assert "the arguments of the last train" in run.stdout
  assert ran(log)[-1][-1] == first  # the same command on every worker, quoting kept
  assert "--config.data.train=folder:/mnt/gcs/p/all" in first and "--config.total_steps=9\\ 000" in first
  log.unlink()
  run = launch(env, "resume", "--name", "cj", "--config", "configs/demo.py", "--", "--config.seed=1")
  changed = ran(log)[-1][-1]
  assert "--config configs/demo.py" in changed and "--config.seed=1" in changed
  assert "batch_size" not in changed and "folder:/mnt/gcs/p/all" in changed
  other = launch(env, "--dry-run", "resume", "--name", "other")  # another VM: nothing remembered
  assert "folder:" not in other.stdout and "configs/pix2pix_resnet18.py" in other.stdout


@pytest.mark.parametrize("state, commands", [
    ("READY", ["describe", "ssh"]),
    ("missing", ["describe", "create", "scp", "ssh", "ssh"]),
    ("STOPPED", ["describe", "start", "ssh"]),
    ("PREEMPTED", ["describe", "delete", "create", "scp", "ssh", "ssh"]),
])
def test_resume_deletes_only_a_preempted_vm(fake_gcloud, state, commands):
  env, log = fake_gcloud
  run = launch({**env, "FAKE_STATE": state}, "resume", "--workdir", "gs://b/w")
  assert run.returncode == 0, run.stderr
  assert [c[4] for c in ran(log)] == commands


@pytest.mark.parametrize("state", ["broken", "CREATING", "REPAIRING"])
def test_resume_changes_nothing_while_the_state_is_unknown_or_changing(fake_gcloud, state):
  env, log = fake_gcloud
  run = launch({**env, "FAKE_STATE": state}, "resume", "--workdir", "gs://b/w")
  assert run.returncode == 2
  assert ("PERMISSION_DENIED" in run.stderr) if state == "broken" else (f"is {state}" in run.stderr)
  assert [c[4] for c in ran(log)] == ["describe"]


def test_the_pid_file_names_the_training_process_and_stop_waits_for_its_checkpoint(fake_gcloud, tmp_path):
  """The worker side of train and stop, run here: a stand-in python saves on SIGTERM."""
  env, log = fake_gcloud
  home = tmp_path / "home"
  (home / "colorjax").mkdir(parents=True)
  python = home / "colorjax-venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text("#!/usr/bin/env bash\ntrap 'echo saved at step 7; exit 143' TERM\n"
                    "echo training; while :; do sleep 0.1; done\n")
  python.chmod(0o755)
  worker = {**os.environ, "HOME": str(home)}
  launch(env, "train", "--workdir", "/tmp/w")
  launch(env, "stop")
  (_, train_command), (_, stop_command) = [c[-1].split("=", 1) for c in ran(log)]
  started = subprocess.run(["bash", "-c", train_command], env=worker, capture_output=True, text=True, timeout=30)
  assert "training started" in started.stdout
  pid = int((home / "colorjax-train.pid").read_text())
  try:
    _check_worker_side(pid, home, train_command, stop_command, worker)
  finally:
    if os.path.exists(f"/proc/{pid}"):  # a failed check must not leave the stand-in running
      os.kill(pid, signal.SIGKILL)


def _check_worker_side(pid, home, train_command, stop_command, worker):
  for _ in range(100):  # setsid and nohup exec into it (no fork): the same pid becomes the stand-in
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      args = f.read().split(b"\0")  # empty for an instant while a process execs
    if len(args) > 1 and args[1].endswith(b"colorjax-venv/bin/python"):  # bash running the stand-in
      break
    time.sleep(0.05)
  else:
    raise AssertionError(f"pid {pid} never became the training process")
  again = subprocess.run(["bash", "-c", train_command], env=worker, capture_output=True, text=True, timeout=30)
  assert f"already training (pid {pid})" in again.stdout
  stopped = subprocess.run(["bash", "-c", stop_command], env=worker, capture_output=True, text=True, timeout=30)
  assert "stopped on" in stopped.stdout and _gone(pid)
  assert (home / "colorjax-train.log").read_text().splitlines()[-2:] == ["training", "saved at step 7"]


def _gone(pid: int) -> bool:
  """Exited: no process, or a zombie its new parent has not reaped yet (setsid left it to init)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"
  except FileNotFoundError:
    return True


def test_resume_recreates_the_slice_that_was_there_in_its_project(fake_gcloud):
  """Found 2026-12-02: resume recreated a preempted v4-32 as the default v4-8 unless TPU_TYPE
  was set again, and one that was gone in gcloud's default project, not the one it was made in."""
  env, log = fake_gcloud
  run = launch({**env, "FAKE_TYPE": "v4-32"}, "resume", "--name", "cj", "--workdir", "gs://b/w")
  assert run.returncode == 0, run.stderr
  assert "type: v4-32" in run.stdout
  create = ran(log)[2]
  assert create[4] == "create" and "--accelerator-type=v4-32" in create and "--version=tpu-ubuntu2204-base" in create
  log.unlink()
  run = launch({**env, "FAKE_TYPE": "v4-32"}, "resume", "--name", "cj", "--workdir", "gs://b/w", "--type", "v5p-8")
  assert "--accelerator-type=v5p-8" in ran(log)[2] and "--version=v2-alpha-tpuv5" in ran(log)[2]  # given: it wins
  log.unlink()

  assert launch(env, "create", "--name", "gone", "--type", "v5litepod-16", "--project", "p", "--spot").returncode == 0
  log.unlink()
  run = launch({**env, "FAKE_STATE": "missing"}, "resume", "--name", "gone", "--workdir", "gs://b/w")
  assert run.returncode == 0, run.stderr
  describe, create = ran(log)[:2]
  assert "--project=p" in describe
  assert create[4] == "create" and create[5:] == ["gone", "--zone=us-central2-b", "--project=p",
                                                  "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot"]
  assert all("--project=p" in command for command in ran(log))
