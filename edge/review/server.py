"""``edgeqc review``: the store, the station feed, the web app and uvicorn, wired and run.

:class:`ReviewServer` owns every resource. ``serve()`` runs in the foreground until
SIGINT/SIGTERM (the CLI); ``start()``/``stop()`` run it on a background thread (tests, embedding).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from edge.review.app import create_app
from edge.review.archive_import import ArchiveImporter
from edge.review.auth import AccessGuard, check_bind, is_loopback
from edge.review.events import EventHub
from edge.review.live import StationFeed
from edge.review.messages import PartMessage
from edge.review.stations import StationState
from edge.review.store import ReviewStore, StoreError
from edge.settings import ConfigError, ReviewSettings

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.review")


class _Uvicorn(uvicorn.Server):
    """uvicorn server that ends the SSE streams on SIGINT/SIGTERM (else shutdown would wait for
    them) and returns normally instead of re-raising the signal, so the store is closed cleanly."""

    def __init__(self, config: uvicorn.Config, on_exit: Any) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = any free port).

    Raises:
        ConfigError: the address cannot be resolved or bound (in use, not ours).
    """
    try:
        fam = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=fam, backlog=64)
    except OSError as exc:
        raise ConfigError(f"review.host:port = {host}:{port}: cannot listen ({exc})") from None


class ReviewServer:
    """The review server.

    Args:
        review: the ``review`` settings section (host, port, stations, db_path, token, shifts, retention).
        pass_classes: ``decision.pass_classes`` (verdict checks, export default).
        archive: optional reject-archive folder imported at start and every ``archive_interval_s``.

    Raises:
        ConfigError: non-loopback host without token, port in use, unusable database, bad endpoint.
    """

    def __init__(
        self,
        review: ReviewSettings,
        pass_classes: Sequence[str],
        archive: str | Path | None = None,
        archive_interval_s: float = 30.0,
    ) -> None:
        self.settings = review
        check_bind(review.host, review.token)
        if archive and not Path(archive).is_dir():
            raise ConfigError(f"--archive {str(archive)!r}: not a folder")
        self._sock = bind_socket(review.host, review.port)
        self.port = int(self._sock.getsockname()[1])
        try:
            self.store = ReviewStore(review.db_path, pass_classes)
        except StoreError as exc:
            self._sock.close()
            raise ConfigError(str(exc)) from None
        self.hub = EventHub()
        self.feed = (
            StationFeed(list(review.stations), on_reject=self._on_reject, on_health=self._on_health)
            if review.stations else None
        )
        self.importer = (
            ArchiveImporter(self.store, archive, review.keep_unreviewed_days * 86400.0, on_added=self._announce)
            if archive else None
        )
        self._archive_interval = archive_interval_s
        app = create_app(self.store, self.hub, self._health, review.shift_starts)
        self.app = AccessGuard(app, review.token, loopback_only=is_loopback(review.host))
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on", ws="none",
            proxy_headers=False, server_header=False, timeout_graceful_shutdown=3,
        )
        self._server = _Uvicorn(config, on_exit=self.hub.close)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------------ running
    def _start_workers(self) -> None:
        if self.feed is not None:
            try:
                self.feed.start()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        t = threading.Thread(target=self._maintain, name="review-maintenance", daemon=True)
        t.start()
        self._threads.append(t)

    def serve(self) -> None:
        """Run in the foreground until SIGINT/SIGTERM, then release everything."""
        try:
            self._start_workers()
            log.info("review page on %s (stations: %s, store: %s)", self.url,
                     ", ".join(self.settings.stations) or "none", self.settings.db_path)
            self._server.run(sockets=[self._sock])
        finally:
            self.close()

    def start(self, timeout: float = 10.0) -> Self:
        """Run on a background thread; returns once the page answers."""
        try:
            self._start_workers()
        except BaseException:
            self.close()
            raise
        t = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name="review-http", daemon=True)
        t.start()
        self._threads.append(t)
        end = time.monotonic() + timeout
        while not self._server.started:
            if not t.is_alive() or time.monotonic() > end:
                self.close()
                raise RuntimeError("review server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the HTTP server and the feed, close the store (idempotent)."""
        self.hub.close()
        self._server.should_exit = True
        for t in self._threads:
            if t.name == "review-http":
                t.join(10.0)
        self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self.feed is not None:
            self.feed.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5.0)
        with contextlib.suppress(OSError):
            self._sock.close()
        self.store.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ callbacks
    def _on_reject(self, msg: PartMessage, image: bytes | None, fmt: str | None, st: StationState) -> None:
        rid, change = self.store.add_reject(msg, image, fmt, origin="zmq")
        if change != "none":
            self._announce(rid)

    def _announce(self, rid: int) -> None:
        row = self.store.get(rid)
        if row is not None:
            self.hub.publish("reject", row)

    def _on_health(self, st: StationState) -> None:
        self.hub.publish("station", st.to_dict())

    def _health(self) -> list[dict[str, Any]]:
        return self.feed.health() if self.feed is not None else []

    def _maintain(self) -> None:
        """Archive import (every ``archive_interval_s``) and retention (hourly), off the web threads."""
        next_scan = next_prune = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if self.importer is not None and now >= next_scan:
                    self.importer.scan()
                    next_scan = now + self._archive_interval
                if now >= next_prune:
                    cutoff = time.time() - self.settings.keep_unreviewed_days * 86400.0
                    n = self.store.prune(cutoff)
                    if n:
                        log.info("retention: deleted %d unreviewed rejects older than %.1f days", n,
                                 self.settings.keep_unreviewed_days)
                    next_prune = now + 3600.0
            except Exception:
                log.exception("review maintenance failed")
            self._stop.wait(1.0)
