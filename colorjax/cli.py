"""What every command does the same way: a quiet console, and one line for a bad input."""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import logging
import os
import pathlib
import re
import sys
import tempfile
import threading
from typing import Any, Callable, NoReturn, Sequence

import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from colorjax.interrupts import catch_interrupts, exit_interrupted


def _quiet(record: logging.LogRecord) -> bool:
  orbax = f"{os.sep}orbax{os.sep}" in record.pathname
  if orbax and record.exc_info and record.thread != threading.main_thread().ident:
    # A save or read thread's failure: the main thread raises it again, and the command's error
    # line says what it was (a full disk: two such tracebacks of ~50 lines before that line).
    record.exc_info = record.exc_text = None
  return record.levelno >= logging.WARNING or not (orbax or record.pathname.endswith("xla_bridge.py"))


def quiet_console() -> None:
  """Keeps orbax's dozens of INFO lines per checkpoint and JAX's backend probing off the
  console (absl's handler, which prints every logger's records, and in a notebook the root
  logger's own); their warnings and errors still show, an orbax thread's without its traceback."""
  for handler in (absl_logging.get_absl_handler(), *logging.getLogger().handlers):
    handler.addFilter(_quiet)


def cache_compilations() -> None:
  """Keeps compiled models in `~/.cache/colorjax/jax` (XDG_CACHE_HOME; JAX_COMPILATION_CACHE_DIR
  wins), so colorize, evaluate, serve and compare run again on the same model and render shapes
  skip most of the compile: 6.0 s -> 2.8 s for three photos with the demo model on 2 CPU cores."""
  import jax  # here: `import colorjax` does not load JAX

  if not jax.config.jax_compilation_cache_dir:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache, "colorjax", "jax"))


def check_writable(folder: str, flag: str, at_end: Callable[..., Any] = atexit.register) -> None:
  """A ValueError naming `flag` unless files can be made in `folder` (created if missing):
  checked before the minutes of work whose results would have nowhere to go. A folder made
  here that is still empty at the end (the command failed first) is removed again: `at_end`
  registers that (at exit by default; training passes its ExitStack's callback)."""
  created = not os.path.isdir(folder)
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise ValueError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
  if created:
    at_end(remove_if_empty, folder)


def remove_if_empty(folder: str) -> None:
  """Removes `folder` if it is empty: what a command made and then wrote nothing to."""
  with contextlib.suppress(OSError):  # not empty (the usual case), or gone
    os.rmdir(folder)


def exit_with_error(e: BaseException, message: str | None = None) -> NoReturn:
  """Ends a command on a bad input (a path, a config, a source): one `error:` line and exit
  status 1. The traceback, for when the message hides a bug, is logged at debug level:
  `--verbosity=1` shows it."""
  logging.debug("the traceback of the error below", exc_info=e)
  sys.exit(f"error: {message or e}")


def exit_if_out_of_memory(e: BaseException, lower: str, then: str = "") -> None:
  """Ends a command whose accelerator ran out of memory (XLA's RESOURCE_EXHAUSTED, e.g. a batch a
  GPU cannot hold) with one `error:` line: the device, XLA's own line, and the settings to
  `lower` ("--batch-size (now 8)"), then `then`. Other errors return, for the caller to raise."""
  lines = str(e).strip().splitlines()
  if not lines or "RESOURCE_EXHAUSTED" not in lines[0]:
    return
  import jax  # pylint: disable=g-import-not-at-top  # here: cli stays light for the commands' flag parsing
  device = jax.local_devices()[0]  # one this process ran on: another's has no memory_stats
  try:
    limit = (device.memory_stats() or {}).get("bytes_limit")
  except (RuntimeError, NotImplementedError):  # a backend that keeps no statistics
    limit = None
  where = device.device_kind + (f" ({limit / 2 ** 30:.0f} GiB)" if limit else "")
  exit_with_error(e, f"out of memory on {where}: {lines[0].rstrip('.')}; lower {lower}, and run again{then}")


def run(main: Callable[[list[str]], None], flags_parser: Callable[[list[str]], Any]) -> None:
  """absl's `app.run` for a command: a `UsageError` (arguments missing or out of range) is one
  `error:` line, not every flag's help with the reason last; `--help` ends with status 0; and
  Ctrl-C where the command does not handle it (loading a model, scanning photos) ends in one line
  and status 130, as a shell expects, not a traceback; also where Python swallowed the
  KeyboardInterrupt (`interrupts.py`)."""
  def checked(argv: list[str]) -> None:
    try:
      main(argv)
    except app.UsageError as e:
      exit_with_error(e)

  def parse(argv: list[str]) -> Any:
    try:
      return flags_parser(argv)
    except SystemExit as e:  # only --help and its kin exit while parsing: absl's status 1 would fail `cmd --help && ...`
      raise SystemExit(0 if e.code == 1 else e.code) from None

  interrupts = catch_interrupts()
  interrupts.started = True
  try:
    app.run(checked, flags_parser=parse)
  except KeyboardInterrupt:
    exit_interrupted()
  except SystemExit as e:
    if interrupts.lost and e.code in (None, 0):
      exit_interrupted()
    raise


def config_error(e: BaseException) -> str:
  """One line for a config that failed to load: the last line of a file's traceback or IOError,
  or a misspelt field's own message ("'image_sise' Did you mean "image_size"...")."""
  cause = e.__cause__ or e
  if isinstance(cause, AttributeError) and cause.name == "get_config":
    return "the file defines no get_config()"
  tb = cause.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  from_config_dict = tb is not None and os.path.basename(tb.tb_frame.f_code.co_filename) == "config_dict.py"
  if isinstance(cause, (AttributeError, KeyError)) and cause.args and from_config_dict:
    message = cause.args[0]
    while isinstance(message, BaseException) and message.args:  # ml_collections wraps its KeyError
      message = message.args[0]
    message = " ".join(str(message).split())
    # update_from_flattened_dict on a locked config (the notebook's OVERRIDES) lists every field
    locked = re.fullmatch(r'Key "(.+?)" does not exist and cannot be added since the config is locked\..*?'
                          r'( Did you mean .*)?', message)
    return f"no such config field {locked[1]!r}{locked[2] or ''}" if locked else "no such config field " + message
  lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
  if not lines or isinstance(cause, KeyError):  # a KeyError's text is only the key
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
  return lines[-1]


def _flag_argument(argv: Sequence[str], *names: str) -> str | None:
  """The value given in `argv` to the flag called any of `names`, for a parse that failed before
  reaching it (config_flags records the config file only once it loaded)."""
  for i, arg in enumerate(argv):
    name, equals, value = arg.lstrip("-").partition("=")
    if arg.startswith("-") and name in names:
      return value if equals else argv[i + 1] if i + 1 < len(argv) else None
  return None


def parse_config_flags(parse: Callable[[list[str]], Any], argv: list[str]) -> Any:
  """`parse(argv)` for a command with a `--config` file, which config_flags runs while parsing:
  a bad override or variant, and whatever the file's own code raises (a syntax error, a failed
  import, no get_config()), is one `error:` line, with the traceback for `--verbosity=1`
  wherever it stands."""
  try:
    return parse(argv)
  except Exception as e:  # noqa: BLE001 -- the config file's own code may raise anything
    if (verbosity := _flag_argument(argv, "verbosity", "v")) is not None:
      with contextlib.suppress(flags.Error, ValueError):
        flags.FLAGS["verbosity"].parse(verbosity)
    if isinstance(e, flags.Error) and not str(e).startswith("flag --config="):  # an override: it names itself
      exit_with_error(e, config_error(e))
    if (argument := _flag_argument(argv, "config")) is None:
      exit_with_error(e, "--config is required: a config file or a shipped config, one of "
                         f"{', '.join(shipped_configs()) or '(none found)'}")
    exit_with_error(e, f"--config {argument}: {config_error(e)}")


def shipped_configs() -> dict[str, str]:
  """The configs that came with this colorjax, name -> file: the checkout's top-level
  `configs/*.py` (`__init__.py` is no config), which a wheel installs inside colorjax as the
  package `colorjax.configs` (pyproject.toml). Found from this colorjax's own folder, not by
  importing `colorjax.configs`, which for a checkout on PYTHONPATH over another one's editable
  install would be the other checkout's."""
  package = pathlib.Path(str(importlib.resources.files(__package__)))
  folder = package / "configs"
  if not folder.is_dir():  # a checkout (an editable install, or on PYTHONPATH): configs/ beside colorjax/
    folder = package.parent / "configs"
  if not folder.is_dir():
    return {}
  files = (f for f in folder.iterdir() if f.name.endswith(".py") and not f.name.startswith("_"))
  return {f.name[:-3]: str(f) for f in sorted(files, key=lambda f: f.name)}


def config_file(argument: str) -> str:
  """`--config`'s argument with its file found: `argument` itself where that file exists, else
  the shipped config it names (`quick_cpu`, `quick_cpu.py` or `configs/quick_cpu.py`, so the
  commands in the docs run from an installed colorjax too; a folder of that name is no file),
  with its `:variant` kept. A FileNotFoundError listing the shipped names when neither exists."""
  path, colon, variant = argument.partition(":")
  if os.path.isfile(path):
    return argument
  folder, name = os.path.split(os.path.normpath(path))
  name = name[:-3] if name.endswith(".py") else name
  shipped = shipped_configs()
  if folder in ("", "configs") and name in shipped:
    return shipped[name] + colon + variant
  raise FileNotFoundError(f"no such file; the shipped configs are {', '.join(shipped) or '(none found)'}")


class _ConfigFileParser(flags.ArgumentParser):
  """config_flags' own parser of `--config`, given the file `config_file` finds."""

  def __init__(self, parser: flags.ArgumentParser):
    self._parser = parser

  def parse(self, argument: str) -> Any:
    return self._parser.parse(config_file(argument))

  def flag_type(self) -> str:
    return self._parser.flag_type()


def define_config_flag(help_string: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Every command's `--config FILE[:VARIANT]` (config_flags, with `--config.FIELD=VALUE`
  overrides and the config locked), where FILE may also name a shipped config (`config_file`).
  Parse with `parse_config_flags`, read with `loaded_config`."""
  config_flags.DEFINE_config_file("config", None, help_string, flag_values=flag_values, lock_config=True)
  flag_values["config"].parser = _ConfigFileParser(flag_values["config"].parser)
  # --help lists the main module's key flags; config_flags defined this one as its own (--helpfull lists it once).
  flag_values.register_key_flag_for_module(sys.argv[0], flag_values["config"])


def config_name(flag_values: flags.FlagValues = flags.FLAGS) -> str:
  """The `--config` file's name without its folder, `.py` and variant (train's `runs/<name>`):
  `quick_cpu` for `configs/quick_cpu.py`, `quick_cpu` and `quick_cpu:x` alike."""
  name = os.path.basename(config_flags.get_config_filename(flag_values["config"]).partition(":")[0])
  return name[:-3] if name.endswith(".py") else name


def loaded_config() -> ml_collections.ConfigDict:
  """The `--config` flag's config, or one `error:` line naming the file when config_flags could
  not read it (it defers that error to the config's first use) or get_config() returned no ConfigDict."""
  config, filename = flags.FLAGS.config, config_flags.get_config_filename(flags.FLAGS["config"])
  if (found := config_file(filename)) != filename:
    logging.info("--config %s: the shipped config %s", filename, found)
  try:
    config.get("total_steps")
  except (OSError, KeyError, TypeError, ValueError) as e:
    exit_with_error(e, f"--config {filename}: {config_error(e)}")
  except AttributeError:  # not a ConfigDict: said below
    pass
  if not isinstance(config, ml_collections.ConfigDict):
    exit_with_error(TypeError(type(config).__name__), f"--config {filename}: get_config() must return an "
                    f"ml_collections.ConfigDict, not {type(config).__name__} (start from colorjax.config.default_config())")
  return config
