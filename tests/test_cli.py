"""`--config` names a shipped config where no such file exists, so an installed colorjax (no
checkout, no configs/ folder) runs the commands the docs show."""

import glob
import importlib.metadata
import importlib.resources
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile

import pytest
from absl import flags

from colorjax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
  """A working directory with no configs/ folder, as an installed colorjax's user has."""
  monkeypatch.chdir(tmp_path)
  return tmp_path


def test_a_shipped_name_is_its_file(elsewhere):
  shipped = cli.shipped_configs()
  assert sorted(f"{name}.py" for name in shipped) == [n for n in TOP_LEVEL if n != "__init__.py"]
  for argument in ("quick_cpu", "quick_cpu.py", "configs/quick_cpu.py", "./configs/quick_cpu.py"):
    assert cli.config_file(argument) == shipped["quick_cpu"], argument
  with open(shipped["quick_cpu"], "rb") as f, open(os.path.join(REPO, "configs", "quick_cpu.py"), "rb") as g:
    assert f.read() == g.read()


def test_a_variant_is_kept(elsewhere):
  assert cli.config_file("pix2pix_resnet18:cpu") == cli.shipped_configs()["pix2pix_resnet18"] + ":cpu"
  assert cli.config_file("configs/pix2pix_resnet18.py:cpu") == cli.shipped_configs()["pix2pix_resnet18"] + ":cpu"


def test_a_file_that_exists_wins_over_the_shipped_one(elsewhere):
  (elsewhere / "configs").mkdir()
  (elsewhere / "configs" / "quick_cpu.py").write_text("")
  (elsewhere / "demo").write_text("")
  assert cli.config_file("configs/quick_cpu.py:x") == "configs/quick_cpu.py:x"
  assert cli.config_file("demo") == "demo"
  assert cli.config_file("quick_cpu") == cli.shipped_configs()["quick_cpu"]  # no file of that name here
  (elsewhere / "encdec_small").mkdir()  # a folder is no config file
  assert cli.config_file("encdec_small") == cli.shipped_configs()["encdec_small"]


@pytest.mark.parametrize("argument", ["nope", "configs/nope.py:cpu", "elsewhere/quick_cpu.py", "/no/such/demo.py"])
def test_neither_a_file_nor_a_shipped_name_lists_the_shipped_names(argument, elsewhere):
  """A missing file in another folder is not taken for the shipped config of its name."""
  with pytest.raises(FileNotFoundError, match="^no such file; the shipped configs are classify_resnet18, demo, .*quick_cpu"):
    cli.config_file(argument)


def test_the_flag_loads_a_shipped_config_with_its_variant_and_overrides(elsewhere, monkeypatch):
  argv = ["prog", "--config", "pix2pix_resnet18:cpu", "--config.batch_size=3"]
  monkeypatch.setattr(sys, "argv", argv)  # where config_flags looks for the overrides
  flag_values = flags.FlagValues()
  cli.define_config_flag("config", flag_values)
  flag_values(argv)
  config = flag_values.config
  assert config.image_size == 64 and config.batch_size == 3  # the :cpu variant's size, the override
  assert flag_values["config"].config_filename == "pix2pix_resnet18:cpu"
  assert cli.config_name(flag_values) == "pix2pix_resnet18"  # train's runs/<name>
  other = flags.FlagValues()
  cli.define_config_flag("config", other)
  with pytest.raises(FileNotFoundError, match="the shipped configs are"):
    other(["prog", "--config", "nope"])


def test_the_packaged_configs_are_the_top_level_files():
  """pyproject.toml ships configs/ as colorjax.configs; checked where colorjax is installed
  (`pip install -e .` or a wheel), not where it is only on PYTHONPATH."""
  spec = importlib.util.find_spec("colorjax.configs")
  if spec is None:
    pytest.skip("colorjax.configs is not installed (colorjax is on PYTHONPATH): `pip install -e .` to check the packaging")
  packaged = importlib.resources.files("colorjax.configs")
  if os.path.realpath(str(packaged)) not in (os.path.join(REPO, "configs"), os.path.realpath(str(importlib.resources.files("colorjax") / "configs"))):
    pytest.skip(f"colorjax.configs is another checkout's ({packaged})")
  assert sorted(f.name for f in packaged.iterdir() if f.name.endswith(".py")) == TOP_LEVEL
  for name in TOP_LEVEL:
    with open(os.path.join(REPO, "configs", name), "rb") as f:
      assert (packaged / name).read_bytes() == f.read(), name


def test_pyproject_lists_every_package():
  """An explicit package list (packages.find cannot map configs/ into colorjax), so a new
  subpackage must be added to it or the wheel leaves it out."""
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    tool = tomllib.load(f)["tool"]["setuptools"]
  assert tool["package-dir"] == {"colorjax.configs": "configs"}
  found = [os.path.relpath(folder, REPO).replace(os.sep, ".") for folder, _, _ in os.walk(os.path.join(REPO, "colorjax"))
           if os.path.basename(folder) != "__pycache__"]  # as packages.find's namespace discovery finds them
  assert sorted(tool["packages"]) == sorted(found + ["colorjax.configs"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """What `pip install git+URL` installs, built offline (~2 s) from a copy, so the checkout
  gets no build/ folder."""
  if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
    pytest.skip("no pip and setuptools to build the wheel with offline")
  tmp_path = tmp_path_factory.mktemp("wheel")
  src = tmp_path / "src"
  for name in ("colorjax", "configs"):
    shutil.copytree(os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
  (built,) = (tmp_path / "dist").iterdir()
  return built


def test_the_wheel_ships_the_configs_and_the_assets(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  assert sorted(n.split("/")[-1] for n in names if n.startswith("colorjax/configs/")) == TOP_LEVEL
  photos = glob.glob(os.path.join(REPO, "colorjax", "assets", "photos", "*"))
  assert {f"colorjax/assets/photos/{os.path.basename(p)}" for p in photos} | {"colorjax/assets/CREDITS.md"} <= names


def test_installed_configs_find_their_photos_or_ask_for_them(wheel, tmp_path):
  """Installed, demo trains on the bundled photos inside the package, and quick_cpu and
  gpu_10min, whose `../shared/data` is a checkout's, leave config.data.train unset, so train asks
  for it, instead of pointing into site-packages (`site-packages/shared/data/ade20k does not exist`)."""
  site = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(site)
  code = ("import importlib.util, json\n"
          "from colorjax import cli\n"
          "out = {}\n"
          "for name in ('demo', 'quick_cpu', 'gpu_10min'):\n"
          "  spec = importlib.util.spec_from_file_location(name, cli.config_file(name))\n"
          "  module = importlib.util.module_from_spec(spec)\n"
          "  spec.loader.exec_module(module)\n"
          "  out[name] = module.get_config().data.train\n"
          "print(json.dumps(out))\n")
  env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  data = json.loads(result.stdout.strip().splitlines()[-1])
  assert data == {"demo": f"folder:{site / 'colorjax' / 'assets' / 'photos'}", "quick_cpu": "", "gpu_10min": ""}


def test_a_checkout_config_finds_the_shared_photos_beside_it():
  from colorjax import config
  shared = os.path.normpath(os.path.join(REPO, os.pardir, "shared", "data"))
  assert config.shared_photos(os.path.join(REPO, "configs", "quick_cpu.py")) == \
      f"folder:{shared}/ade20k,folder:{shared}/imagenet_sample"


def _run(*args, cwd=REPO):
  return subprocess.run([sys.executable, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": REPO},
                        capture_output=True, text=True, timeout=300)


def test_the_colorjax_command_names_every_command_module():
  from colorjax import __main__ as entry
  modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "colorjax", "*.py"))
             if 'if __name__ == "__main__":' in open(p).read() and not p.endswith("__main__.py")}
  assert set(entry.COMMANDS) == modules


def test_the_colorjax_command_runs_a_command_as_its_module_does(tmp_path):
  flags_ = ["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]
  via_command, via_module = _run("-m", "colorjax", "export", *flags_), _run("-m", "colorjax.export", *flags_)
  assert via_command.returncode == via_module.returncode == 1, via_command.stderr[-2000:]
  assert via_command.stderr.splitlines()[-1] == via_module.stderr.splitlines()[-1] == (
      f"error: workdir {str(tmp_path / 'nope')!r} does not exist")


def test_train_without_a_config_lists_the_shipped_ones():
  run = _run("-m", "colorjax", "train")
  assert run.returncode == 1 and run.stderr.splitlines()[-1] == (
      f"error: --config is required: a config file or a shipped config, one of {', '.join(cli.shipped_configs())}")


@pytest.mark.parametrize("command", [["colorjax.train"], ["colorjax.bench", "step"]])
def test_help_lists_the_config_flag_with_the_commands_own(command):
  out, full = _run("-m", *command, "--help"), _run("-m", *command, "--helpfull")
  own = out.stdout.split("\nflags:\n", 1)[1].split("Try --helpfull")[0]  # the main module's flags
  assert "  --config: " in own and "  --workdir: " in own, out.stdout[-2000:]
  assert out.returncode == full.returncode == 0  # absl's own status for help is 1
  assert full.stdout.count("  --config: ") == 1, full.stdout  # it was listed under colorjax.cli too


def test_the_colorjax_command_alone_or_unknown_lists_the_commands():
  from colorjax import __main__ as entry
  alone, helped, unknown = _run("-m", "colorjax"), _run("-m", "colorjax", "--help"), _run("-m", "colorjax", "trian")
  assert (alone.returncode, alone.stdout, alone.stderr) == (1, "", entry.USAGE + "\n")
  assert (helped.returncode, helped.stdout) == (0, entry.USAGE + "\n")
  assert all(f"  {name} " in entry.USAGE for name in entry.COMMANDS)
  assert _run("-m", "colorjax", "--version").stdout == f"colorjax {importlib.metadata.version('colorjax')}\n"
  assert unknown.returncode == 1 and unknown.stderr == (
      "error: unknown command 'trian': one of train, colorize, evaluate, compare, export, serve, prepare, bench "
      "(`colorjax --help` says what each does)\n")


@pytest.mark.parametrize("flag", ["--verbosity=1", "--helpfull", "--config=demo"])
def test_a_flag_before_the_command_is_said_to_belong_after_it(flag, monkeypatch):
  from colorjax import __main__ as entry
  monkeypatch.setattr(sys, "argv", list(sys.argv))
  with pytest.raises(SystemExit) as e:
    entry.main(["colorjax", flag, "train"])
  assert e.value.code == (f"error: {flag} comes before a command: a command's flags follow it, `colorjax COMMAND "
                          "[flags]`, one of train, colorize, evaluate, compare, export, serve, prepare, bench "
                          "(`colorjax COMMAND --help` lists its flags)")


def test_ctrl_c_while_a_command_imports_is_one_line_and_status_130(monkeypatch, capsys):
  """A KeyboardInterrupt the `colorjax` command's module raises while it imports (one not from
  Ctrl-C's handler, which ends the process itself: below)."""
  from colorjax import __main__ as entry
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(sys, "argv", list(sys.argv))
  monkeypatch.setattr(entry.runpy, "run_module", interrupted)
  monkeypatch.setattr("colorjax.interrupts.catch_interrupts", lambda: None)  # not in pytest's process
  with pytest.raises(SystemExit) as e:
    entry.main(["colorjax", "train", "--config", "demo"])
  assert e.value.code == 130 and capsys.readouterr().err == "\ninterrupted\n"


# sitecustomize for the command below: Ctrl-C (SIGINT) arrives while JAX imports, once the
# command has started, in the import itself or in a garbage collection callback.
CTRL_C_IN_JAX_IMPORT = """
import gc, signal, sys
def ctrl_c():
  signal.raise_signal(signal.SIGINT)
class Finder:
  def find_spec(self, name, path=None, target=None):
    if name == "jax" and "colorjax" in sys.modules:
      sys.meta_path.remove(self)
      {where}
meta = Finder()
def in_gc(phase, info):  # as JAX's _xla_gc_callback: a KeyboardInterrupt there is swallowed
  if "jax._src.lib" in sys.modules:
    gc.callbacks.remove(in_gc)
    ctrl_c()
sys.meta_path.insert(0, meta)
"""


@pytest.mark.parametrize("where", ["ctrl_c()", "gc.callbacks.append(in_gc)"])
@pytest.mark.parametrize("command", [["-m", "colorjax.train"], ["-m", "colorjax", "train"]])
def test_ctrl_c_while_jax_imports_ends_the_command_at_once(tmp_path, where, command):
  """Before, `python -m colorjax.train` printed a traceback, and a Ctrl-C that landed in JAX's
  gc callback was swallowed: the command trained to its end (both entry points), or crashed
  (an ImportError from jaxlib's extension, SIGSEGV, SIGABRT: 2026-12-01, 28 Ctrl-Cs at 0.16-0.29 s)."""
  (tmp_path / "site").mkdir()
  (tmp_path / "site" / "sitecustomize.py").write_text(CTRL_C_IN_JAX_IMPORT.format(where=where))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), REPO])}
  run = subprocess.run([sys.executable, *command, "--config", "demo", "--workdir", str(tmp_path / "run"),
                        "--config.total_steps=1", "--config.pretrain_steps=1"],  # quick, should it go on
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert (run.returncode, run.stderr) == (130, "\ninterrupted\n"), run.stderr[-3000:]
  assert not (tmp_path / "run").exists()


def test_the_wheel_installs_the_colorjax_command(wheel):
  archive = zipfile.ZipFile(wheel)
  (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
  assert "colorjax = colorjax.__main__:main" in archive.read(entry_points).decode().splitlines()


def test_an_accelerator_out_of_memory_is_one_line_and_other_runtime_errors_pass():
  import jax
  import jax.numpy as jnp
  with pytest.raises(jax.errors.JaxRuntimeError) as oom:  # a real RESOURCE_EXHAUSTED: 16 TB asked of the CPU
    jnp.zeros((2 ** 42,), jnp.float32).block_until_ready()
  with pytest.raises(SystemExit) as e:
    cli.exit_if_out_of_memory(oom.value, "--batch-size (now 8)", " with --skip-existing")
  assert e.value.code == ("error: out of memory on cpu: RESOURCE_EXHAUSTED: Out of memory allocating 17592186044416 "
                          "bytes; lower --batch-size (now 8), and run again with --skip-existing")
  assert cli.exit_if_out_of_memory(RuntimeError("INTERNAL: something else"), "--batch-size (now 8)") is None


def test_out_of_memory_on_a_process_other_than_0_names_its_own_device(monkeypatch):
  """In a multi-process run jax.devices()[0] is process 0's: elsewhere its memory_stats raises
  (INVALID_ARGUMENT: only for addressable devices), so the line lost the device's size."""
  import jax

  class Device:
    device_kind = "NVIDIA H100 80GB HBM3"

    def __init__(self, addressable):
      self.addressable = addressable

    def memory_stats(self):
      if not self.addressable:
        raise jax.errors.JaxRuntimeError("INVALID_ARGUMENT: MemoryStats is only supported for addressable PjRt devices.")
      return {"bytes_limit": 80 * 2 ** 30}

  monkeypatch.setattr(jax, "devices", lambda *a: [Device(False), Device(True)])
  monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device(True)])
  with pytest.raises(SystemExit) as e:
    cli.exit_if_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 bytes."),
                              "config.batch_size (now 8 over 2 devices)")
  assert e.value.code == ("error: out of memory on NVIDIA H100 80GB HBM3 (80 GiB): RESOURCE_EXHAUSTED: Out of memory "
                          "while trying to allocate 1 bytes; lower config.batch_size (now 8 over 2 devices), and run again")


def test_the_console_shows_an_orbax_threads_error_in_one_line():
  """A checkpoint thread's failure (a full disk: two ~50-line tracebacks) is raised again in the
  main thread, whose error line says what it was: on the console it is one line. An error of
  the main thread keeps its traceback."""
  from orbax.checkpoint._src.futures import future  # a file orbax logs a save thread's error from

  console = io.StringIO()
  handler = logging.StreamHandler(console)
  handler.addFilter(cli._quiet)

  def log_failure(where):
    try:
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ... No space left on device")
    except ValueError:
      handler.handle(logging.getLogger("absl").makeRecord(
          "absl", logging.ERROR, future.__file__, 387, "%s raised an exception", (where,), sys.exc_info()))

  thread = threading.Thread(target=log_failure, args=("a save thread",))
  thread.start()
  thread.join()
  assert console.getvalue() == "a save thread raised an exception\n"
  log_failure("the main thread")
  assert "the main thread raised an exception\nTraceback (most recent call last)" in console.getvalue()
