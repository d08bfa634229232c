"""What the entry points (main.py, get_data.py, plot.py, report.py) share: Ctrl-C at any moment ends
the run with one line on stderr and exit status 130, as shells report SIGINT, never a traceback."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

STOPPED = 130  # exit status after Ctrl-C (SIGINT)


def _stop_now(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"stopped\n")
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
    if code == STOPPED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
