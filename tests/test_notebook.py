"""The Colab notebook runs top to bottom on CPU, papermill-style, with a tiny config."""

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab_tpu.ipynb")
TINY = {"image_size": 32, "batch_size": 4, "total_steps": 2, "pretrain_steps": 1, "log_every": 1,
        "eval_every": 2, "checkpoint_every": 2, "eval_max_images": 4, "model.generator": "pix2pix_unet",
        "model.num_downs": 5, "model.ngf": 8, "model.discriminator": "none"}


def with_parameters(nb, **params):
  """Adds an `injected-parameters` cell after the `parameters` cell, as papermill does."""
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
  return nb


def images(cell):
  return [np.asarray(Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))))
          for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def test_colab_only_calls_are_guarded():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    for call in ("drive.mount", "files.upload", "files.download", "auth.authenticate_user"):
      if call in cell.source:
        line = next(l for l in cell.source.splitlines() if call in l)
        before = cell.source[:cell.source.index(line)]
        assert "if IN_COLAB" in before.splitlines()[-1] or "if IN_COLAB" in before, (call, cell.source)
  assert nb.cells[1].metadata["tags"] == ["parameters"]


def test_notebook_trains_shows_samples_and_colorizes_then_resumes(tmp_path, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", REPO)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # tiny models compile ~15x faster
  workdir = str(tmp_path / "run")
  params = dict(CONFIG="demo", WORKDIR=workdir, DATA=f"folder:{REPO}/colorjax/assets/photos", OVERRIDES=TINY,
                TENSORBOARD=False)
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), **params)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(REPO, "launch")}}).execute()

  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert "JAX " in text and "cpu" in text
  assert "step 2/2" in text and "orbax" not in text and "CheckpointManager" not in text  # quiet_console
  samples = next(c for c in nb.cells if "samples" in c.source and "display(" in c.source)
  (grid,) = images(samples)
  assert grid.shape[0] == 3 * 32  # gray | prediction | truth
  colorized = next(c for c in nb.cells if "Colorizer.from_workdir" in c.source)
  (pair,) = images(colorized)
  photo = np.asarray(Image.open(f"{REPO}/colorjax/assets/photos/grace_hopper.jpg"))
  assert pair.shape == (photo.shape[0], 2 * photo.shape[1], 3)
  assert os.path.exists(os.path.join(workdir, "colorized", "grace_hopper.png"))
  assert json.load(open(os.path.join(workdir, "final_metrics.json")))["step"] == 2

  # A disconnected session re-runs the notebook: training continues from the checkpoint.
  params["OVERRIDES"] = {**TINY, "total_steps": 3}
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), **params)
  train_index = next(i for i, c in enumerate(nb.cells) if "train_and_evaluate" in c.source)
  nb.cells = nb.cells[:train_index + 1]  # the rest ran above
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(REPO, "launch")}}).execute()
  train_cell = next(c for c in nb.cells if "train_and_evaluate" in c.source)
  assert "resumed from" in "".join(o.get("text", "") for o in train_cell.outputs)
  assert json.load(open(os.path.join(workdir, "final_metrics.json")))["step"] == 3


def test_a_config_that_is_neither_a_file_nor_shipped_is_named(tmp_path, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", REPO)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), CONFIG="nope:cpu", WORKDIR=str(tmp_path / "run"),
                       TENSORBOARD=False)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.join(REPO, "launch")}})
  with pytest.raises(nbclient.exceptions.CellExecutionError,
                     match="CONFIG = 'nope:cpu': no such file; the shipped configs are classify_resnet18, demo"):
    client.execute()


def test_outside_a_checkout_it_stays_put_and_a_misspelt_override_is_named(tmp_path, monkeypatch):
  """Not a new field nobody reads (the config trained its own 300 steps); and runs/ goes beside
  the notebook, not under / (the search for configs/ used to climb there)."""
  monkeypatch.setenv("PYTHONPATH", REPO)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), CONFIG="demo", OVERRIDES={"total_step": 5},
                       TENSORBOARD=False)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  with pytest.raises(nbclient.exceptions.CellExecutionError,
                     match="OVERRIDES: no such config field 'total_step' Did you mean \"total_steps\""):
    client.execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert f"workdir: {tmp_path / 'runs' / 'demo'}\n" in text
