"""colorjax: automatic image colorization in JAX/Flax.

`colorjax.Colorizer.from_workdir("runs/demo")(photo) -> colorized photo`. The name is loaded on
first use (PEP 562), so `import colorjax` stays cheap: JAX and Flax load only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from colorjax.colorize import Colorizer

__all__ = ["Colorizer"]


def __getattr__(name: str) -> Any:
  if name == "Colorizer":
    from colorjax.colorize import Colorizer
    return Colorizer
  raise AttributeError(f"module 'colorjax' has no attribute {name!r}")
