"""A quiet, informative start for the command-line scripts (main.py, get_data.py, plot.py).

TensorFlow's C++ side (absl's "All log messages before absl::InitializeLog()", the oneDNN banner of
port.cc, CPU-feature and CUDA registration lines) writes to file descriptor 2 directly, whatever
TF_CPP_MIN_LOG_LEVEL says, so the terminal is kept from it by giving descriptor 2 to /dev/null and
Python's sys.stderr a descriptor of its own: Python's warnings, errors, tracebacks and progress bars
still reach the terminal. `--verbose` or METADROP_VERBOSE=1 keeps everything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import ModuleType

VERBOSE_ENV = "METADROP_VERBOSE"


def verbose(argv: Sequence[str]) -> bool:
    """--verbose (or an abbreviation argparse accepts) in argv, or METADROP_VERBOSE set and not 0."""
    flag = any(len(a) > 2 and "--verbose".startswith(a) for a in argv)
    return flag or os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def start(argv: Sequence[str]) -> None:
    """Call first in a script's `__main__` (never in a library or a test process): unless verbose,
    TensorFlow's C++ log lines go to /dev/null for the rest of the process and its Python logger
    shows errors only."""
    if verbose(argv):
        return
    sys.stderr.flush()
    own = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = os.fdopen(own, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # deprecation notices of tf.compat.v1


def device(tf: ModuleType, asked: str | None, xla: bool) -> str:
    """The start-up line: what this process runs on (the GPU's name, or the CPU and its thread count)
    and whether XLA is on. asked: the GPU flag given and its value (main.py's `--gpu_id 1`,
    transfer.py's `--gpus 2,3`), None when none was; a GPU asked for that TensorFlow does not see (no
    such GPU, no driver, a CPU build) is a warning on stderr."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        first = asked.split()[-1].split(",")[0] if asked else "0"
        where = f"GPU {first} ({name})"
    else:
        if asked is not None:
            print(
                f"warning: {asked}: TensorFlow sees no such GPU; the run continues on the CPU",
                file=sys.stderr,
            )
        where = f"CPU ({len(os.sched_getaffinity(0))} threads)"
    return f"running on {where}, XLA {'on' if xla else 'off'}"
