"""What the entry points (main.py, get_data.py, plot.py, report.py) share: Ctrl-C at any moment ends
the run with one line on stderr and exit status 130, as shells report SIGINT, never a traceback."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

STOPPED = 130  # exit status after Ctrl-C (SIGINT)


def _stop_now(signum: int, frame: FrameType | None) -> None:
    try:
        fd = sys.stderr.fileno()  # quiet.start gives Python's stderr its own descriptor
    except (AttributeError, OSError, ValueError):
        fd = 2
    os.write(fd, b"stopped\n")
    os._exit(STOPPED)


def quiet_ctrl_c() -> None:
    """For a script's first lines: until its main() starts, Ctrl-C (while the modules load) ends the
    process at once with the one line; nothing has been written yet."""
    signal.signal(signal.SIGINT, _stop_now)


def ctrl_c_raises() -> None:
    """From here on, Ctrl-C raises KeyboardInterrupt (main's handlers save what they can)."""
    if signal.getsignal(signal.SIGINT) is _stop_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(main: Callable[[], int]) -> NoReturn:
    """sys.exit(main()); after Ctrl-C the process ends at once, without waiting for threads that
    libraries left running (everything is written whole by then: data.files.atomic)."""
    code = main()
    quiet_ctrl_c()  # Ctrl-C while the process ends: still the one line
    if code == STOPPED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def missing_parent(path: str) -> str | None:
    """Why the folder that would hold the output `path` is not there (None if it is): an output
    flag's folder must exist, so that a typo'd path stops instead of becoming a tree of new folders."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(parent):
        return None
    if os.path.exists(parent):
        return f"{parent} is a file, not a folder"
    return f"the folder {parent} does not exist: create it first, or correct the path"


MAX_SEED = 2**31 - 1  # the largest seed every consumer takes (TensorFlow's op seeds, numpy's)
MAX_ITERS = 10**9  # iterations, steps and their frequencies: a bound no run comes near


def out_of_range(
    args: argparse.Namespace, bounds: dict[str, tuple[int, int]], why: dict[str, str]
) -> str | None:
    """What is wrong with the first flag of `bounds` (name -> (least, most)) outside its range, None
    if every one is inside; a flag left at None is not checked. `why` explains a flag's least value.
    The most keeps a typo from building a graph or allocating arrays no machine holds (a count past
    2**63 once overflowed while the graph was built)."""
    for name, (least, most) in bounds.items():
        value = getattr(args, name)
        if value is None or least <= value <= most:
            continue
        if value < least:
            return f"--{name} must be at least {least}" + (f" ({why[name]})" if name in why else "")
        return f"--{name} must be at most {most}, not {value}"
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (no usage block), exit status 2, and that reads
    a '-' followed by a digit (or -inf, -nan) as a value (argparse alone reads -1e-3 or -0.1,0.2 as
    a flag and says "expected one argument"), so each flag's own check names what is wrong with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's test of what is a negative number, not a flag (no flag here starts with a digit
        # or is named inf or nan): -1e-3, -.5, and -inf, -nan as Python's float() reads them
        self._negative_number_matcher = re.compile(r"^-(\.?\d|(inf|infinity|nan)$)", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (python {self.prog} --help lists the flags)\n")
