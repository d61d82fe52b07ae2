"""Multi-host start-up: two real processes on localhost train like one process with the same batch."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from colorjax import distributed
from test_train import write_photos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each process: join the run, agree on stop flags, train 3 steps on its half of a fixed global batch, then train a
# 1-device copy on the whole batch and compare. Batch norm must see the global batch.
WORKER = textwrap.dedent("""
    import jax, numpy as np
    from colorjax import config as config_lib, distributed, train
    assert distributed.initialize()
    assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
    c = config_lib.default_config()
    c.image_size, c.batch_size = 32, 4
    c.model.generator, c.model.num_downs, c.model.ngf, c.model.discriminator = "pix2pix_unet", 5, 8, "none"
    c.dtype = "float32"  # an AMX CPU's bfloat16 operands would round the two sums' ~1e-7 apart
    y, x = np.mgrid[0:32, 0:32] / 32
    batch = np.stack([np.stack([x, y, 1 - x * y], -1) * (0.4 + 0.15 * i) for i in range(4)])
    batch = (batch * 255).astype(np.uint8)
    me = jax.process_index()
    assert distributed.agree(me == 1, False) == (True, False)  # a stop seen by one process stops both
    assert distributed.from_process_0(None if me == 0 else 7) is None and distributed.from_process_0(3 + me) == 3

    def fit(trainer, local):
      state = trainer.init_state()
      for step in range(3):
        state, m = trainer.step(state, local, step)
      return jax.device_get((state.g_params, state.g_stats)), float(m["g_recon"])

    (both, loss2) = fit(train.Trainer(c), batch[2 * me:2 * me + 2])
    (alone, loss1) = fit(train.Trainer(c, jax.local_devices()), batch)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(alone)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    print("SAME", me, len(jax.tree.leaves(both)))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  outs = _run_two(WORKER, [], tmp_path)
  for i, out in enumerate(outs):
    assert f"SAME {i}" in out, out[-4000:]


# Each process runs the whole command's loop on its share of a photo folder, both writing to one
# workdir: a wall-clock budget spent at once stops both at the same step (they agree every
# AGREE_EVERY steps), with one checkpoint; the re-run finishes both.
LOOP_WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    from jax.experimental import multihost_utils
    from colorjax import config as config_lib, distributed, train
    assert distributed.initialize()
    photos, workdir = (arg.format(process=jax.process_index()) for arg in sys.argv[1:3])
    minutes = float(sys.argv[3])
    c = config_lib.default_config()
    c.data.train, c.data.eval_fraction = "folder:" + photos, 0.25
    c.image_size, c.batch_size, c.total_steps, c.pretrain_steps = 32, 4, 12, 12
    c.log_every = c.eval_every = c.checkpoint_every = 6
    c.eval_max_images, c.max_train_minutes = 4, minutes
    c.model.generator, c.model.num_downs, c.model.ngf, c.model.discriminator = "pix2pix_unet", 5, 8, "none"
    try:
      train.train_and_evaluate(c, workdir)
    except (ValueError, FileNotFoundError) as e:
      sys.exit(f"REFUSED {jax.process_index()}: {e}")
    multihost_utils.sync_global_devices("final_metrics.json written")  # process 0 writes it last
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    print("DONE", jax.process_index(), final["step"], final["complete"])
""")


def _run_two(script: str, args: list[str], tmp_path) -> list[str]:
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
         "COLORJAX_COORDINATOR": f"127.0.0.1:{_free_port()}", "COLORJAX_NUM_PROCESSES": "2"}
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-c", script, *args], env={**env, "COLORJAX_PROCESS_ID": str(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=400)[0])
    finally:
      p.kill()
  return outs


def test_two_processes_stop_together_and_resume_then_one_process_goes_on(tmp_path, caplog):
  from test_train import tiny_config
  from colorjax import train
  photos, workdir = write_photos(str(tmp_path / "photos")), str(tmp_path / "run")
  for minutes, step, complete in (("1e-9", 10, False), ("0", 12, True)):
    outs = _run_two(LOOP_WORKER, [photos, workdir, minutes], tmp_path)
    for i, out in enumerate(outs):
      assert f"DONE {i} {step} {complete}" in out, out[-4000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "12", "6"]
  records = [json.loads(line) for line in open(os.path.join(workdir, "runs.jsonl"))]  # process 0's, once
  assert [(r["event"], r["step"], r.get("ended")) for r in records] == [
      ("start", 0, None), ("end", 10, "max_train_minutes"), ("start", 10, None), ("end", 12, "complete")]
  assert records[2]["environment"]["process_count"] == 2
  # What the two processes saved together colorizes in one process with one device.
  from colorjax.colorize import Colorizer
  for checkpoint in ("latest", "best"):
    colorizer = Colorizer.from_workdir(workdir, checkpoint)
    assert colorizer(np.full((40, 40), 128, np.uint8)).shape == (40, 40, 3)
  # And trains on in one.
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(tiny_config(photos, total_steps=13, pretrain_steps=13, batch_size=4,
                                         **{"model.discriminator": "none"}), workdir)
  assert "it was saved by 2 processes, this run has 1" in caplog.text


def test_a_workdir_each_host_has_for_itself_is_refused_not_a_hang(tmp_path):
  """A local --workdir on a pod: each host would wait at the first save for the others' steps."""
  photos = write_photos(str(tmp_path / "photos"))
  outs = _run_two(LOOP_WORKER, [photos, str(tmp_path / "run_{process}"), "0"], tmp_path)
  for i, out in enumerate(outs):
    assert (f"REFUSED {i}: workdir {tmp_path}/run_{i} is not shared by all 2 processes (process 0 wrote a "
            "file there that process 1 cannot see)") in out, out[-4000:]
  assert not (tmp_path / "run_0").exists() and not (tmp_path / "run_1").exists()  # each removed the one it made


def test_a_host_that_cannot_read_the_photos_stops_every_host(tmp_path):
  photos = write_photos(str(tmp_path / "photos_0"))  # process 1's photos_1 is missing: a mount that failed
  outs = _run_two(LOOP_WORKER, [str(tmp_path / "photos_{process}"), str(tmp_path / "run"), "0"], tmp_path)
  assert "REFUSED 0: another process stopped with an error (its log says which)" in outs[0], outs[0][-4000:]
  assert f"REFUSED 1: config.data.train: image folder '{tmp_path}/photos_1' does not exist" in outs[1], outs[1][-4000:]
  assert os.path.isdir(photos) and not os.path.exists(tmp_path / "run")


@pytest.fixture
def calls(monkeypatch):
  """Records jax.distributed.initialize calls instead of making them."""
  made = []
  for var in ("COLORJAX_COORDINATOR", "COLORJAX_NUM_PROCESSES", "COLORJAX_PROCESS_ID", "COLORJAX_DISTRIBUTED",
              "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: made.append(kw))
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  return made


def test_single_host_does_nothing(calls, monkeypatch):
  assert not distributed.initialize()
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  monkeypatch.setenv("COLORJAX_COORDINATOR", "h:1")
  monkeypatch.setenv("COLORJAX_NUM_PROCESSES", "1")
  monkeypatch.setenv("COLORJAX_PROCESS_ID", "0")
  assert not distributed.initialize()
  assert calls == []


@pytest.mark.parametrize("env, expected", [
    ({"COLORJAX_COORDINATOR": "10.0.0.2:1234", "COLORJAX_NUM_PROCESSES": "4", "COLORJAX_PROCESS_ID": "3"},
     {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}),
    ({"COLORJAX_DISTRIBUTED": "1"}, {}),        # Cloud TPU VM pod slice (launch/tpu_vm.sh sets it)
    ({"SLURM_NTASKS": "8"}, {}),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
    ({"TPU_WORKER_HOSTNAMES": "t-0,t-1"}, {}),  # GKE TPU slice
])
def test_multi_host_environments_initialize(calls, monkeypatch, env, expected):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert distributed.initialize()
  assert calls == [expected]


def test_incomplete_settings_say_what_is_missing(calls, monkeypatch):
  monkeypatch.setenv("COLORJAX_COORDINATOR", "h:1")
  with pytest.raises(ValueError, match="COLORJAX_NUM_PROCESSES and COLORJAX_PROCESS_ID must be"):
    distributed.initialize()
  monkeypatch.setenv("COLORJAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("COLORJAX_PROCESS_ID", "2")
  with pytest.raises(ValueError, match=r"must be in \[0, 2\)"):
    distributed.initialize()


@pytest.mark.parametrize("env, message", [
    ({"COLORJAX_COORDINATOR": "h:1", "COLORJAX_NUM_PROCESSES": "two", "COLORJAX_PROCESS_ID": "0"},
     "COLORJAX_NUM_PROCESSES='two' is not a whole number"),
    ({"COLORJAX_COORDINATOR": "h:1", "COLORJAX_NUM_PROCESSES": "0", "COLORJAX_PROCESS_ID": "0"},
     "COLORJAX_NUM_PROCESSES=0 must be at least 1"),
    ({"SLURM_NTASKS": "4(x2)"}, "SLURM_NTASKS='4.x2.' is not a whole number"),
])
def test_a_setting_that_is_not_a_count_is_named(calls, monkeypatch, env, message):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with pytest.raises(ValueError, match=message):
    distributed.initialize()
  assert calls == []


def test_a_cluster_setting_jax_cannot_join_is_named(calls, monkeypatch):
  def no_cluster(**kw):
    raise ValueError("coordinator_address should be defined.")

  monkeypatch.setattr(distributed.jax.distributed, "initialize", no_cluster)
  monkeypatch.setenv("COLORJAX_DISTRIBUTED", "1")
  with pytest.raises(ValueError, match=r"COLORJAX_DISTRIBUTED=1 says this is one of several processes, but JAX found "
                     r"no cluster to join \(coordinator_address should be defined.\): unset it on one machine"):
    distributed.initialize()
