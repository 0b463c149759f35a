"""Keep TensorFlow's log spam off the terminal of `edgetune pretrain` / `quantize`.

TensorFlow prints a dozen lines on import (absl's "All log messages before
absl::InitializeLog()", oneDNN and CPU-feature notices), the TFLite converter prints its
MLIR/SavedModel chatter on stderr and Keras's export prints the SavedModel endpoints on
stdout -- burying the one line the verb itself prints. Some of it comes from C++ before
TF_CPP_MIN_LOG_LEVEL is read, so `quiet()` redirects the process's file descriptors 1 and 2
for the duration of a block (and Python warnings / absl logging with them). If the block
raises, whatever was captured is written to stderr before the exception propagates, so a
failure still shows TensorFlow's own explanation. `--verbose` on the verbs turns all of this off.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


def setup(verbose: bool) -> None:
    """Before TensorFlow is imported: silence its C++ logging unless verbose (a value the user
    set in the environment wins)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _flush_c() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no libc symbols (not Linux/macOS)
        pass


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Run a block with fds 1/2, sys.stdout, Python warnings and absl/TF logging silenced
    (nothing changes when verbose). The captured output is shown if the block raises."""
    if verbose:
        yield
        return
    setup(False)
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "keras", "h5py")]
    levels = [lg.level for lg in loggers]
    with tempfile.TemporaryFile() as tmp:
        saved = (os.dup(1), os.dup(2))
        pyout = io.StringIO()
        ok = False
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(pyout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
            ok = True
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            _flush_c()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)
            if not ok:
                tmp.seek(0)
                text = tmp.read().decode(errors="replace") + pyout.getvalue()
                if text.strip():
                    sys.stderr.write(text if text.endswith("\n") else text + "\n")
                    sys.stderr.flush()
