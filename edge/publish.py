"""ZeroMQ publishing of results, reject frames and station status (pyzmq PUB).

Topics (first frame of each multipart message):

* ``result`` — ``[b"result", JSON]`` for every inspection (schema v1, docs/ARCHITECTURE.md);
* ``reject`` — ``[b"reject", JSON, JPEG bytes]`` for every fail;
* ``status`` — ``[b"status", JSON]`` station health, every ``zmq.status_interval_ms``.

Sends never block: the socket has ``ZMQ_XPUB_NODROP`` set so that a full send queue (a slow
subscriber, ``SNDHWM`` messages) raises ``zmq.Again`` on a non-blocking send instead of dropping
silently (zmq_setsockopt(3): "ZMQ_XPUB_NODROP … applicable socket types ZMQ_XPUB, ZMQ_PUB");
we count those drops. Sequence numbers in the JSON let subscribers detect gaps. A PUB socket is
not thread-safe: only the outputs thread calls :meth:`Publisher.handle` / :meth:`publish_status`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import zmq

from edge.result import InspectionResult
from edge.settings import ZmqSettings

log = logging.getLogger("edgeqc.publish")


class Publisher:
    """PUB socket sink. ``stats``: ``sent``, ``dropped`` (messages), ``encode_errors``."""

    def __init__(self, settings: ZmqSettings, context: zmq.Context[Any] | None = None) -> None:
        self.settings = settings
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, settings.send_hwm)
        self._sock.setsockopt(zmq.LINGER, 500)
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        try:
            self._sock.bind(settings.endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise OSError(f"zmq.endpoint = {settings.endpoint!r}: cannot bind ({exc})") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stats = {"sent": 0, "dropped": 0, "encode_errors": 0}

    def _send(self, parts: list[bytes]) -> None:
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=len(parts[-1]) < 65536)
            self.stats["sent"] += 1
        except zmq.Again:
            self.stats["dropped"] += 1

    def handle(self, result: InspectionResult) -> None:
        """Publish one result (and, for a reject with a frame, the reject message with its JPEG)."""
        body = json.dumps(result.to_message(), separators=(",", ":")).encode()
        self._send([b"result", body])
        if result.is_reject:
            jpeg = b""
            if result.frame is not None:
                try:  # kept on the result: the archive reuses it at the same quality
                    jpeg = result.encoded("jpg", self.settings.jpeg_quality)
                except ValueError:
                    self.stats["encode_errors"] += 1
            self._send([b"reject", body, jpeg])

    def publish_status(self, status: dict[str, Any]) -> None:
        self._send([b"status", json.dumps(status, separators=(",", ":")).encode()])

    def close(self, timeout: float = 1.0) -> None:
        self._sock.setsockopt(zmq.LINGER, int(timeout * 1000))
        self._sock.close()
