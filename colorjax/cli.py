"""What every command does the same way: a quiet console, and one line for a bad input."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import tempfile
from typing import Any, Callable, NoReturn

from absl import app
from absl import logging as absl_logging


def _quiet(record: logging.LogRecord) -> bool:
  noisy = f"{os.sep}orbax{os.sep}" in record.pathname or record.pathname.endswith("xla_bridge.py")
  return record.levelno >= logging.WARNING or not noisy


def quiet_console() -> None:
  """Keeps orbax's dozens of INFO lines per checkpoint and JAX's backend probing off the
  console (absl's handler, which prints every logger's records, and in a notebook the root
  logger's own); their warnings still show."""
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


def check_writable(folder: str, flag: str) -> None:
  """A ValueError naming `flag` unless files can be made in `folder` (created if missing):
  checked before the minutes of work whose results would have nowhere to go. A folder made
  here that is still empty when the command ends (it failed first) is removed again."""
  created = not os.path.isdir(folder)
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise ValueError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
  if created:
    atexit.register(_remove_if_empty, folder)


def _remove_if_empty(folder: str) -> None:
  with contextlib.suppress(OSError):  # not empty (the usual case), or gone
    os.rmdir(folder)


def exit_with_error(e: BaseException, message: str | None = None) -> NoReturn:
  """Ends a command on a bad input (a path, a config, a source): one `error:` line and exit
  status 1. The traceback, for when the message hides a bug, is logged at debug level:
  `--verbosity=1` shows it."""
  logging.debug("the traceback of the error below", exc_info=e)
  sys.exit(f"error: {message or e}")


def run(main: Callable[[list[str]], None], flags_parser: Callable[[list[str]], Any]) -> None:
  """absl's `app.run` for a command: a `UsageError` (arguments missing or out of range) is one
  `error:` line, not every flag's help with the reason last, and Ctrl-C where the command does
  not handle it (loading a model, scanning photos) ends in one line and status 130, as a shell
  expects, not a traceback."""
  def checked(argv: list[str]) -> None:
    try:
      main(argv)
    except app.UsageError as e:
      exit_with_error(e)

  try:
    app.run(checked, flags_parser=flags_parser)
  except KeyboardInterrupt:
    sys.stderr.write("\ninterrupted\n")  # after a progress bar's half line
    sys.exit(130)
