"""sd_notify through a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.service import Notifier, status_line


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_exact_datagrams(listener: socket.socket) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready(status="model loaded, camera ok, PLC ok")
    assert recv(listener) == b"READY=1\nSTATUS=model loaded, camera ok, PLC ok"
    assert n.status("12.0 parts/min,\n 1 rejects")  # one line: newlines would start new assignments
    assert recv(listener) == b"STATUS=12.0 parts/min, 1 rejects"
    assert n.stopping()
    assert recv(listener) == b"STOPPING=1"
    assert n.extend_timeout(90)
    assert recv(listener) == b"EXTEND_TIMEOUT_USEC=90000000"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading(status="reloading model.engine")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = recv(listener).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[2] == "STATUS=reloading model.engine"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert n.sent == 5 and n.failed == 0


def test_watchdog_pings_at_half_the_interval(listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    t = [100.0]
    n = Notifier(clock=lambda: t[0])
    assert n.watchdog_interval == 1.0
    assert n.watchdog() is True  # first call pings
    assert recv(listener) == b"WATCHDOG=1"
    t[0] = 100.5
    assert n.watchdog() is False  # the loop calls every turn; only every 1 s goes out
    t[0] = 101.0
    assert n.watchdog() is True
    assert n.watchdog(force=True) is True
    assert recv(listener) == b"WATCHDOG=1" and recv(listener) == b"WATCHDOG=1"
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        recv(listener)
    assert n.sent == 3


def test_watchdog_for_another_pid_or_unset(listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = Notifier()
    assert n.watchdog_interval is None and n.watchdog() is False
    monkeypatch.delenv("WATCHDOG_USEC")
    assert Notifier().watchdog() is False


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    n = Notifier()
    assert not n.enabled
    assert [n.ready(), n.reloading(), n.stopping(), n.status("x"), n.watchdog(force=True)] == [False] * 5
    assert n.sent == 0 and n.failed == 0


def test_reconnects_after_the_manager_reexecutes(tmp_path: Path, listener: socket.socket) -> None:
    n = Notifier()
    assert n.ready()
    assert recv(listener) == b"READY=1"
    # PID 1 re-executes: the socket file is recreated, the old connection is dead
    path = os.environ["NOTIFY_SOCKET"]
    listener.close()
    os.unlink(path)
    new = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    new.bind(path)
    new.settimeout(5.0)
    try:
        assert n.status("still alive")
        assert recv(new) == b"STATUS=still alive"
    finally:
        new.close()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgeqc-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_listener_gone_is_counted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    n = Notifier()
    assert n.ready() is False and n.failed == 1


def test_status_line() -> None:
    st = {"parts_per_min": 42.0, "parts": 120, "rejects": 3, "camera": "ok", "plc": "lost", "model": "ok"}
    assert status_line(st) == "42.0 parts/min, 3 rejects of 120, camera ok, PLC lost, model ok"


def test_child_process_under_a_stand_in_manager(tmp_path: Path) -> None:
    """The harness the service integration tests use: a child with NOTIFY_SOCKET/WATCHDOG_USEC."""
    import subprocess
    import sys

    from notify_listener import NotifyListener

    child = ("from edge.service import Notifier\n"
             "n = Notifier()\n"
             "assert n.watchdog_interval == 1.5\n"
             "n.status('loading model')\n"
             "n.ready('model ok, camera ok, PLC ok')\n"
             "for _ in range(3):\n"
             "    n.watchdog(force=True)\n"
             "n.reloading()\n"
             "n.ready()\n"
             "n.stopping()\n")
    with NotifyListener(tmp_path) as sd:
        env = {**os.environ, **sd.env(watchdog_s=3.0), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run([sys.executable, "-c", child], env=env, check=False, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert sd.wait_for("STOPPING") == {"STOPPING": "1"}
        assert sd.keys() == ["STATUS", "READY", "WATCHDOG", "WATCHDOG", "WATCHDOG", "RELOADING", "READY", "STOPPING"]
        assert sd.wait_for("READY") == {"READY": "1", "STATUS": "model ok, camera ok, PLC ok"}
        assert sd.count("WATCHDOG") == 3 and "MONOTONIC_USEC" in sd.wait_for("RELOADING")
