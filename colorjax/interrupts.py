"""Ctrl-C for the commands: one line and status 130 wherever it lands, from the moment a command
starts, before it imports JAX. Only the standard library here, so that moment comes early."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator, NoReturn


class _Interrupts:
  """Ctrl-C's handler and `sys.unraisablehook` for a command, so that an interrupt Python
  swallowed still ends it with status 130, not 0, and one while it imports is one line.

  The handler raises KeyboardInterrupt wherever the main thread is, and that may be inside a gc
  callback (JAX's `_xla_gc_callback` runs at every collection) or a `__del__`, where Python can
  only print it ("Exception ignored in: ...") and go on: the command then ran to its end and
  exited 0 as if never interrupted. Raised again from the hook, it would only be swallowed again
  (the hook runs inside that callback too, and so would `_thread.interrupt_main`'s handler), so
  the hook notes it as `lost` and says so in one line, and `run` ends a command that then
  finishes as if interrupted. The handler clears `lost` whenever it raises a new
  KeyboardInterrupt: a command that handles Ctrl-C itself (serve) ends as it chooses.
  Until the command starts (`run`) the handler ends the process instead of raising: while
  JAX imports, a KeyboardInterrupt was swallowed (the command then trained to its end), turned
  into an ImportError inside jaxlib's or numpy's extension, or crashed the interpreter; there
  is nothing yet to save. Where SIGINT is not Python's usual handler (ignored in a background
  job), it is left alone.
  """

  def __init__(self):
    self.lost = self.started = False
    self._before = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
      signal.signal(signal.SIGINT, self._handle)

  def _handle(self, signum: int, frame: Any) -> None:
    if not self.started:
      exit_interrupted()
    self.lost = False  # this one may arrive
    signal.default_int_handler(signum, frame)

  def _unraisable(self, unraisable: Any) -> None:
    if not (unraisable.exc_type and issubclass(unraisable.exc_type, KeyboardInterrupt)):
      self._before(unraisable)
      return
    self.lost = True
    sys.stderr.write("\nCtrl-C landed where Python ignores it (a garbage collection callback or finalizer): the "
                     "command goes on and will exit with status 130; Ctrl-C again stops it now\n")


def exit_interrupted() -> NoReturn:
  sys.stderr.write("\ninterrupted\n")  # after a progress bar's half line
  # Not sys.exit: tearing the interpreter down while XLA was interrupted mid-call can crash
  # it (a segmentation fault, status 139, seen with colorize). The atexit functions (an
  # --out folder made and left empty) still run.
  atexit._run_exitfuncs()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(130)


_INTERRUPTS: _Interrupts | None = None


def catch_interrupts() -> _Interrupts:
  """Installs `_Interrupts` once per process. A command calls it as it starts, before it imports
  JAX (`colorjax/__init__.py` for `python -m colorjax.X`, `__main__.py` for `colorjax X`): a
  Ctrl-C in those seconds then ends it at once in one line and status 130, wherever it lands."""
  global _INTERRUPTS
  if _INTERRUPTS is None:
    _INTERRUPTS = _Interrupts()
  return _INTERRUPTS


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """Holds Ctrl-C and SIGTERM back until the block ends, then raises KeyboardInterrupt or
  SystemExit(143): for writes whose threads go on after the main thread is interrupted
  (tensorstore's), so that what cleans up after them finds them finished, not refilling the
  folder it removes. A signal whose handler is not Python's usual one is left alone, and so
  is every signal outside the main thread, which alone may handle them."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  usual = {signal.SIGINT: (signal.default_int_handler, *([_INTERRUPTS._handle] if _INTERRUPTS else [])),
           signal.SIGTERM: (signal.SIG_DFL,)}
  caught: list[int] = []
  held = {s: handler for s, handlers in usual.items() if (handler := signal.getsignal(s)) in handlers}
  for s in held:
    signal.signal(s, lambda signum, frame: caught.append(signum))
  try:
    yield
  finally:
    for s, handler in held.items():
      signal.signal(s, handler)
  if signal.SIGTERM in caught:
    raise SystemExit(128 + signal.SIGTERM)
  if caught:
    raise KeyboardInterrupt
