"""A stand-in for systemd's notification socket, for tests of a process run "as a service".

    with NotifyListener(tmp_path) as sd:
        proc = subprocess.Popen([...], env={**os.environ, **sd.env(watchdog_s=2.0)})
        sd.wait_for("READY", timeout=30)          # -> {"READY": "1", "STATUS": "..."}
        assert sd.count("WATCHDOG") >= 1

Each datagram is parsed into a dict (``KEY=VALUE`` lines, sd_notify(3)); all are kept in order.
Not a test module (no ``test_`` prefix): import it from tests as ``from notify_listener import ...``.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


def parse_notify(datagram: bytes) -> dict[str, str]:
    """``b"READY=1\\nSTATUS=ok"`` -> ``{"READY": "1", "STATUS": "ok"}``."""
    out: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        if "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


class NotifyListener:
    """AF_UNIX datagram socket at ``<folder>/notify.sock`` with a reader thread."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []  # (time.monotonic(), fields)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def env(self, watchdog_s: float | None = None, pid: int | None = None) -> dict[str, str]:
        """Environment for the child: NOTIFY_SOCKET, and WATCHDOG_USEC (+ WATCHDOG_PID) if asked."""
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
            if pid is not None:
                env["WATCHDOG_PID"] = str(pid)
        return env

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), parse_notify(data)))
                self._cond.notify_all()

    def wait_for(self, key: str, timeout: float = 10.0, after: int = 0) -> dict[str, str]:
        """The first message (index >= ``after``) containing ``key``; raises TimeoutError."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, m in self.messages[after:]:
                    if key in m:
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key}= notification within {timeout} s; got {self.keys()}")
                self._cond.wait(left)

    def keys(self) -> list[str]:
        """The first key of every message so far, e.g. ``["READY", "WATCHDOG", "STOPPING"]``."""
        with self._cond:
            return [next(iter(m), "") for _, m in self.messages]

    def count(self, key: str) -> int:
        with self._cond:
            return sum(key in m for _, m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()

    def __enter__(self) -> NotifyListener:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
