"""colorjax: automatic image colorization in JAX/Flax.

`colorjax.Colorizer.from_workdir("runs/demo")(photo) -> colorized photo`. The name is loaded on
first use (PEP 562), so `import colorjax` stays cheap: JAX and Flax load only when needed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from colorjax.colorize import Colorizer

__all__ = ["Colorizer"]


def __getattr__(name: str) -> Any:
  if name == "Colorizer":
    from colorjax.colorize import Colorizer
    return Colorizer
  raise AttributeError(f"module 'colorjax' has no attribute {name!r}")


def _command_run_by_python_m() -> bool:
  """Whether this process is `python -m colorjax.COMMAND` (`python -m colorjax` is `__main__.py`'s)."""
  argv = getattr(sys, "orig_argv", [])
  for i, arg in enumerate(argv[:-1]):
    if arg.startswith("-m"):
      return (arg[2:] or argv[i + 1]).startswith("colorjax.")
  return False


if sys.argv[:1] == ["-m"] and _command_run_by_python_m():  # "-m": Python is still locating the module
  from colorjax import interrupts
  interrupts.catch_interrupts()
