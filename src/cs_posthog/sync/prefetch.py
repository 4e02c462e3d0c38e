"""Read the next page while the current one is being sent, holding at most two pages at once."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, one item ahead of the consumer.

    The producer fetches item N+1 only after the consumer has taken item N, so at any time there
    is the item being consumed plus at most one being fetched (memory: two pages). Exceptions in
    the source are re-raised in the consumer. ``close()`` (or leaving a ``with`` block) stops the
    producer at its next step.
    """

    def __init__(self, source: Iterator[T], *, name: str = "prefetch") -> None:
        self._source = source
        self._q: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=1)
        self._taken = threading.Semaphore(0)
        self._closed = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._source:
                if self._closed.is_set():
                    return
                self._q.put((_ITEM, item))
                while not self._taken.acquire(timeout=0.2):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
        except BaseException as exc:  # forwarded to the consumer
            self._q.put((_ERROR, exc))
        else:
            self._q.put((_END, None))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._q.get()
        if kind == _ITEM:
            self._taken.release()
            return value  # type: ignore[return-value]
        self._done = True
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        self._closed.set()
        self._done = True

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
