"""Fan-out of live events (new reject, verdict, station health) from any thread to SSE clients.

The ZeroMQ feed thread and the web handlers call :meth:`EventHub.publish`; every open
``/api/events`` stream has a bounded queue on the server's event loop. A browser that cannot
keep up gets one ``resync`` event instead of an ever-growing queue (the page then reloads its
list), so a stalled tab never grows the server's memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

Event = tuple[str, Any]


class EventHub:
    """Thread-safe publisher, asyncio subscribers. ``max_queue``: events buffered per client."""

    def __init__(self, max_queue: int = 256) -> None:
        self._max = max_queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[asyncio.Queue[Event | None]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the server's event loop (at application start-up)."""
        with self._lock:
            self._loop = loop
            self._closed = False

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, event: str, data: Any) -> None:
        """Queue ``(event, data)`` for every client; callable from any thread, never blocks."""
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, (event, data))
        except RuntimeError:  # loop closed meanwhile
            pass

    def close(self) -> None:
        """End every stream (server shutdown); callable from any thread or a signal handler."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._end_all)
            except RuntimeError:
                pass

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield events until the hub closes (or the client goes away and the generator is closed)."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(self._max)
        if self._closed:
            return
        self._clients.add(q)
        try:
            while True:
                item = await q.get()
                if item is None:
                    return
                yield item
        finally:
            self._clients.discard(q)

    # -- on the loop thread
    def _fanout(self, item: Event) -> None:
        for q in list(self._clients):
            if q.full():
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(("resync", None))
            else:
                q.put_nowait(item)

    def _end_all(self) -> None:
        for q in list(self._clients):
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)
