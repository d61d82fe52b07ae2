"""`colorjax COMMAND [flags]` (the console script pip installs) = `python -m colorjax.COMMAND [flags]`.

    colorjax colorize --workdir runs/demo old_photo.jpg --out colorized/
    python -m colorjax train --config quick_cpu --workdir runs/quick_cpu

Each command is its module, run as `__main__` with the same flags and exit statuses. This file
imports no JAX, so `colorjax` alone answers at once, and a Ctrl-C while the command's module is
still importing JAX ends in one line and status 130, as it does later.
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {
    "train": "train a colorizer from a config (--config NAME or FILE, --workdir DIR)",
    "colorize": "colorize photos with a trained run or an export (--workdir DIR PHOTOS... --out DIR)",
    "evaluate": "score a run on held-out photos next to the no-colour baseline",
    "compare": "score several runs on the same photos, as one table",
    "export": "pack a run into a small folder that colorize and serve load",
    "serve": "a web page on this machine to colorize one photo at a time",
    "prepare": "decode a photo source once into ArrayRecord shards (shards:DIR)",
    "bench": "speed of a training step, of colorizing and of the data pipeline",
}
USAGE = ("usage: colorjax COMMAND [flags]   (the same as python -m colorjax.COMMAND [flags])\n\n" +
         "\n".join(f"  {name:<9} {what}" for name, what in COMMANDS.items()) +
         "\n\n`colorjax COMMAND --help` lists a command's flags; the README says more; "
         "`colorjax --version` says which colorjax this is.")


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv if argv is None else argv
  if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return
  if len(argv) > 1 and argv[1] in ("-V", "--version"):
    import importlib.metadata  # 40 ms: not before a command starts, where Ctrl-C is not yet handled
    try:
      print(f"colorjax {importlib.metadata.version('colorjax')}")
    except importlib.metadata.PackageNotFoundError:
      print("colorjax, not installed (run from a checkout on PYTHONPATH)")
    return
  if len(argv) < 2:
    sys.exit(USAGE)
  if argv[1].startswith("-"):  # `colorjax --verbosity=1 train`, `colorjax --helpfull`
    sys.exit(f"error: {argv[1]} comes before a command: a command's flags follow it, `colorjax COMMAND "
             f"[flags]`, one of {', '.join(COMMANDS)} (`colorjax COMMAND --help` lists its flags)")
  if argv[1] not in COMMANDS:
    sys.exit(f"error: unknown command {argv[1]!r}: one of {', '.join(COMMANDS)} (`colorjax --help` says what each does)")
  sys.argv = [argv[0], *argv[2:]]  # runpy puts the module's file first, as `python -m` does
  try:
    from colorjax import interrupts  # the standard library only
    interrupts.catch_interrupts()
    runpy.run_module(f"colorjax.{argv[1]}", run_name="__main__", alter_sys=True)
  except KeyboardInterrupt:  # while the module imports; the command's own handler takes over after
    sys.stderr.write("\ninterrupted\n")
    sys.exit(130)


if __name__ == "__main__":
  main()
