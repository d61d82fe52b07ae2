"""Suite-wide setup: one persistent XLA compilation cache for every test and the subprocesses
they start, so a model compiled once (the same tiny U-Net in the trainer, resume and CLI tests)
is not compiled again. Entries are keyed by the program, flags and JAX version, so a stale
cache is never wrong, only unused."""

import os
import tempfile

CACHE = os.path.join(tempfile.gettempdir(), f"colorjax-tests-xla-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
