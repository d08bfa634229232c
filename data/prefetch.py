"""Input-pipeline overlap: meta-batches are prepared in a background thread while the graph runs.

`Session.run` (and PyTorch's kernels) release the GIL, so a worker thread can sample and copy the
next meta-batch meanwhile: sampling never stalls the graph (bench/RESULTS.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
JOIN_TIMEOUT = 5.0  # seconds close() waits for the worker; after Ctrl-C a run must end within seconds


class _Failed:
    """What the worker queues when preparing an item raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate over `items` (any iterable, e.g. a generator of meta-batches) with up to `depth`
    items prepared ahead in a daemon thread. Items come in order; an exception raised while
    preparing one is raised by `next()` at that item. Use as a context manager, or call close()."""

    _END = object()

    def __init__(self, items: Iterable[T], depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"Prefetcher depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iter(items),), daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Block until there is room (True), or until close() (False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failed(e))
            return
        self._put(self._END)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failed):
            self._stop.set()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the worker (it finishes the item in hand) and wait for it, at most JOIN_TIMEOUT: a
        worker still busy (a slow item, or a queue whose lock a KeyboardInterrupt left taken) is a
        daemon thread, dropped when the process ends."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
