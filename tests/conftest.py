"""Suite-wide setup: one persistent XLA compilation cache for every test and the subprocesses
they start, so a model compiled once (the same tiny U-Net in the trainer, resume and CLI tests)
is not compiled again. Entries are keyed by the program, flags and JAX version, so a stale
cache is never wrong, only unused. And a temp dir that pytest prunes."""

import os
import signal
import tempfile
from collections.abc import Iterator

import pytest

CACHE = os.path.join(tempfile.gettempdir(), f"colorjax-tests-xla-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# A suite started in the background (`make test &`) inherits an ignored SIGINT, and so would the
# commands it starts: the tests of their Ctrl-C handling need the terminal's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _temp_files_in_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
  """Temporary files of the tests and their subprocesses go under pytest's basetemp, which
  pytest prunes: TFDS leaves an empty `tmp*tfds` folder in the temp dir for each builder of an
  unbuilt dataset (DatasetInfo.initialize_from_bucket), ~18 per run of the TFDS tests."""
  folder = tmp_path_factory.mktemp("tempfile")
  saved = tempfile.tempdir, os.environ.get("TMPDIR")
  tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
  yield
  tempfile.tempdir = saved[0]
  if saved[1] is None:
    del os.environ["TMPDIR"]
  else:
    os.environ["TMPDIR"] = saved[1]
