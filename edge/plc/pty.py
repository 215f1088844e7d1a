"""Pseudo-terminals standing in for a serial cable: the demo's and tests' pair, the bench's direct pty.

:class:`PtyPair` gives two paths that pyserial opens like serial ports; bytes written to one are
read from the other, raw (no echo, no CR/LF translation). It runs
``socat -d -d pty,raw,echo=0 pty,raw,echo=0`` when socat is installed (Debian package ``socat``)
and otherwise bridges two ``os.openpty()`` pairs with a thread. Linux/macOS only. The demo and
the tests use it: two paths, either end reopenable, like a null-modem cable.

:class:`DirectPty` is one ``os.openpty()`` pair without a relay: the slave's path for the edge
(pyserial opens it), the master as a port object (:class:`PtyMaster`) for the PLC simulator.
``edgeqc bench`` uses it: socat is a process of its own, so every telegram costs two extra
process wake-ups (writer -> socat -> reader), which a real UART does not have. Measured with an
echo over each, 600 round trips at 20 Hz: socat p50 0.42 ms / p99 2.8-3.3 ms, a direct pty p50
0.30-0.34 ms / p99 1.4-2.1 ms.

Sources: socat(1) ``PTY`` address and its ``raw``/``echo``/``link`` options; Python
``pty``/``tty``/``termios``; pty(7) and tty_ioctl(4) (``FIONREAD``); the pyserial 3.5 API whose
``read``/``write``/``in_waiting`` semantics :class:`PtyMaster` follows.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import select
import shutil
import struct
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING

import serial

from edge.plc.link import write_fd

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.plc.pty")
_PTY_RE = re.compile(r"PTY is (\S+)")
_BRIDGE_BUFFER = 65536  # bytes held per direction when the far end does not read; beyond: dropped


class PtyError(RuntimeError):
    """The pty pair could not be created (socat did not start, no ptys available)."""


class PtyPair:
    """Two connected pty endpoints ``a`` and ``b`` (device paths, or ``link_a``/``link_b`` when given).

    Args:
        backend: ``"auto"`` (socat if on PATH and it starts, else Python), ``"socat"`` or ``"python"``.
        link_a, link_b: optional symlink paths created to the endpoints (stable names across a
            restart of the pair; socat replaces an existing link and removes it on exit).
        start_timeout: s to wait for socat to report its ptys.

    Raises:
        PtyError: socat requested but missing, or it did not start in time.

    :meth:`close` ends the pair: the endpoints' users then get read/write errors, exactly like an
    unplugged USB serial adapter.
    """

    def __init__(
        self,
        backend: str = "auto",
        link_a: str | os.PathLike[str] | None = None,
        link_b: str | os.PathLike[str] | None = None,
        start_timeout: float = 5.0,
    ) -> None:
        if backend not in ("auto", "socat", "python"):
            raise ValueError(f"backend must be 'auto', 'socat' or 'python', got {backend!r}")
        socat = shutil.which("socat")
        if backend == "socat" and socat is None:
            raise PtyError("socat not found on PATH (install the Debian package 'socat')")
        self.backend = "socat" if backend != "python" and socat else "python"
        self._links = [Path(p) if p is not None else None for p in (link_a, link_b)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._fds: list[int] = []
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._drainer: threading.Thread | None = None
        self._closed = False
        try:
            if self.backend == "socat":
                assert socat is not None
                try:
                    self.device_a, self.device_b = self._start_socat(socat, start_timeout)
                except PtyError as exc:
                    if backend == "socat":
                        raise
                    log.warning("socat pty pair failed (%s); using the Python bridge", exc)
                    self.backend, self._proc, self._drainer, self._closed = "python", None, None, False
            if self.backend == "python":
                self.device_a, self.device_b = self._start_bridge()
        except BaseException:  # e.g. KeyboardInterrupt while waiting for socat: the caller never gets
            self.close()       # this object to close, so end socat / the bridge here
            raise
        self.a = str(self._links[0]) if self._links[0] else self.device_a
        self.b = str(self._links[1]) if self._links[1] else self.device_b

    # --------------------------------------------------------------- socat
    def _start_socat(self, socat: str, timeout: float) -> tuple[str, str]:
        addrs = []
        for link in self._links:
            addr = "pty,raw,echo=0"
            if link is not None:
                addr += f",link={link}"
            addrs.append(addr)
        # A session of its own: a terminal's Ctrl-C (SIGINT to the whole foreground process group)
        # must reach edgeqc only. socat killed with it closed the ptys under the running station
        # ("PLC port lost", a RES not sent); edgeqc closes socat itself once the station stopped.
        self._proc = subprocess.Popen(
            [socat, "-d", "-d", *addrs], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        paths: list[str] = []
        text = b""
        while b"starting data transfer loop" not in text:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise PtyError(f"socat did not start within {timeout} s: {text.decode(errors='replace')}")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.close()
                raise PtyError(f"socat exited: {text.decode(errors='replace')}")
            text += chunk
        paths = _PTY_RE.findall(text.decode(errors="replace"))
        if len(paths) != 2:
            self.close()
            raise PtyError(f"could not parse socat's pty paths from: {text.decode(errors='replace')}")
        # keep draining socat's log so it never blocks on a full pipe; the thread closes the pipe at EOF
        self._drainer = threading.Thread(target=self._drain, name="pty-socat-log", daemon=True)
        self._drainer.start()
        return paths[0], paths[1]

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = self._proc.stderr
        try:
            while os.read(stream.fileno(), 4096):
                pass
        except OSError:
            pass
        finally:
            stream.close()

    # --------------------------------------------------------------- python bridge
    def _start_bridge(self) -> tuple[str, str]:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        self._fds = [m1, s1, m2, s2]
        for s in (s1, s2):
            tty.setraw(s)  # no echo, no CR/LF translation, byte-transparent
        for m in (m1, m2):
            os.set_blocking(m, False)
        self._wake = os.pipe()
        names = os.ttyname(s1), os.ttyname(s2)
        for link, name in zip(self._links, names):
            if link is not None:
                link.unlink(missing_ok=True)
                link.symlink_to(name)
        self._thread = threading.Thread(target=self._bridge, args=(m1, m2), name="pty-bridge", daemon=True)
        self._thread.start()
        return names

    def _bridge(self, m1: int, m2: int) -> None:
        """Copy m1 <-> m2 until close(); the slaves stay open here so the masters never see EIO
        while an endpoint is reopened."""
        assert self._wake is not None
        wake = self._wake[0]
        pending = {m1: bytearray(), m2: bytearray()}  # bytes waiting to be written INTO that master
        other = {m1: m2, m2: m1}
        while True:
            rlist = [wake] + [m for m in (m1, m2) if len(pending[other[m]]) < _BRIDGE_BUFFER]
            wlist = [m for m in (m1, m2) if pending[m]]
            try:
                r, w, _ = select.select(rlist, wlist, [])
            except (OSError, ValueError):
                return
            if wake in r:
                return
            for m in r:
                try:
                    data = os.read(m, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                pending[other[m]] += data
                del pending[other[m]][_BRIDGE_BUFFER:]
            for m in w:
                try:
                    n = os.write(m, pending[m])
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        return
                    raise
                del pending[m][:n]

    # --------------------------------------------------------------- common
    @property
    def alive(self) -> bool:
        """True while the pair carries bytes."""
        if self._closed:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """End the pair (kill socat / stop the bridge and close the ptys); bounded by ``timeout`` s."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
            if self._drainer is not None:
                self._drainer.join(timeout)  # ends at EOF of socat's stderr, now that socat is gone
            elif self._proc.stderr is not None:
                self._proc.stderr.close()
        if self._wake is not None:
            os.write(self._wake[1], b"x")
            if self._thread is not None:
                self._thread.join(timeout)
            for fd in (*self._fds, *self._wake):
                try:
                    os.close(fd)
                except OSError:
                    pass
            for link in self._links:
                if link is not None and link.is_symlink():
                    link.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PtyPair(backend={self.backend!r}, a={self.a!r}, b={self.b!r}, alive={self.alive})"


class PtyMaster:
    """A pty master file descriptor used as a serial port: what
    :class:`~edge.plc.simulator.PlcSimulator` calls on a pyserial port, no more.

    Args:
        fd: the master fd (from ``os.openpty()``); owned from here on (set non-blocking, closed by
            :meth:`close`).
        timeout: s :meth:`read` waits for the requested bytes (None = until they are there).
        write_timeout: s :meth:`write` waits for room in the pty (None = no limit).
        name: a label for reports and errors (e.g. the slave's path).

    Read, write and ``in_waiting`` may be called from different threads at the same time.
    """

    def __init__(self, fd: int, *, timeout: float | None = 0.1, write_timeout: float | None = 1.0,
                 name: str = "") -> None:
        os.set_blocking(fd, False)
        self._fd: int | None = fd
        self.timeout = timeout
        self.write_timeout = write_timeout
        self.name = name or f"pty master fd {fd}"

    def _fileno(self) -> int:
        fd = self._fd
        if fd is None:
            raise serial.PortNotOpenError()
        return fd

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fd is None

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: returns when ``size`` bytes are read or ``timeout`` s passed (then
        fewer, ``b''`` if none), like pyserial.

        Raises:
            serial.PortNotOpenError: closed. OSError: the pty is gone (EIO when no slave fd is open).
        """
        fd = self._fileno()
        buf = bytearray()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while len(buf) < size:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                break
            try:
                chunk = os.read(fd, size - len(buf))
            except BlockingIOError:
                continue
            if not chunk:
                raise OSError(errno.EIO, f"{self.name}: end of file")
            buf += chunk
        return bytes(buf)

    def write(self, data: bytes) -> int:
        """Write all of ``data``; returns ``len(data)``.

        Raises:
            serial.SerialTimeoutException: not all written within ``write_timeout`` s (nobody
                reads the slave end and the pty's buffer is full); part of it may be written.
            serial.PortNotOpenError: closed. OSError: the pty is gone.
        """
        done = write_fd(self._fileno(), data, self.write_timeout)
        if done < len(data):
            raise serial.SerialTimeoutException(f"Write timeout ({done} of {len(data)} bytes written)")
        return done

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read now (``FIONREAD``)."""
        buf = fcntl.ioctl(self._fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def close(self) -> None:
        """Close the fd (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"PtyMaster({self.name!r}, closed={self.closed})"


class DirectPty:
    """One raw ``os.openpty()`` pair, no relay process: :attr:`path` (the slave, for the edge's
    pyserial) and :attr:`master` (a :class:`PtyMaster`, for the PLC simulator).

    The slave fd stays open here until :meth:`close`, so the edge may close and reopen
    :attr:`path` without the master seeing EIO/hang-up, and the master survives any number of
    simulator runs (a :class:`~edge.plc.simulator.PlcSimulator` given a port object does not
    close it). ``timeout``/``write_timeout``: as :class:`PtyMaster`.

    Raises:
        OSError: no pty available.
    """

    def __init__(self, *, timeout: float | None = 0.1, write_timeout: float | None = 1.0) -> None:
        master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)  # no echo, no CR/LF translation, byte-transparent
            self.path = os.ttyname(self._slave)
        except BaseException:
            os.close(master)
            os.close(self._slave)
            raise
        self.master = PtyMaster(master, timeout=timeout, write_timeout=write_timeout, name=self.path)
        self._closed = False

    def close(self) -> None:
        """Close the master and the slave fd (idempotent); the edge's open port then fails."""
        if self._closed:
            return
        self._closed = True
        self.master.close()
        os.close(self._slave)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DirectPty(path={self.path!r}, closed={self._closed})"
