"""The trigger run's PLC in a process of its own, as a real PLC is a device of its own, on a direct pty.

Why a process: run as a thread of the bench process, :class:`~edge.plc.simulator.PlcSimulator`
shares the GIL with the station it measures: when a ``RES`` arrives while a station thread runs
Python code (building the result, publishing it), the simulator's reader cannot take its arrival
time until that thread lets go of the GIL (up to ``sys.getswitchinterval()``, 5 ms). That wait
belongs to the measuring device, not to the product.

Why a direct pty: the child owns one ``os.openpty()`` pair (:class:`edge.plc.pty.DirectPty`) and
plays the PLC on its master; the station opens the slave's path. A relay such as socat
(:class:`edge.plc.pty.PtyPair`, used by the demo and the tests) is a process of its own: every
telegram costs two extra process wake-ups (simulator -> socat -> station, and back), which a real
UART does not have. Measured with an echo, 600 round trips at 20 Hz: socat p50 0.42 ms / p99
2.8-3.3 ms, direct pty p50 0.30-0.34 ms / p99 1.4-2.1 ms. The child keeps the slave fd open too,
so the master never sees a hang-up when the station closes or reopens its end, and one master
port serves every block.

Protocol (``python -m edge.bench.plc_process``), one JSON object per line:

    <- {"port": "/dev/pts/7"}                       (first line, once the pty exists)
    -> {"tag": "B000", "n": 200}
    <- SimReport.to_dict() + {"latencies_ms": [...], "sent_at": [[part id, monotonic s], ...]}

EOF on stdin ends the child (it closes the pty). ``python -m edge.bench.plc_process listen``: a
listen-only PLC for the free-run pipeline (items 1 and 5): it counts the ``RES`` lines until EOF
on stdin, then writes ``SimReport.to_dict()`` (``free_run_results``) and exits. As a thread of the
bench it took ~0.16 ms of CPU per frame of the bench's own process and competed for its GIL
(docs/performance.md, "Session 6"): the PLC's cost, not the product's.

Sources: :mod:`subprocess` (pipes, line buffering); the GIL switch interval:
``sys.setswitchinterval`` in the Python library reference; pty(7).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

START_TIMEOUT_S = 30.0  # s for the child to import the simulator and report its pty


class PlcProcess:
    """A child process playing the PLC on the master of a direct pty it owns.

    Args:
        rate_hz: triggers per second. answer_timeout_ms: how long it waits for each RES (ms).
        listen: a listen-only PLC instead (counts ``RES`` lines; :meth:`finish` returns the count).
        start_timeout: s to wait for the child's first line (its pty path).

    Attributes:
        port: path of the pty slave, for the station (``Station(s, plc_port=proc.port)``); a pty
            has no line speed, the station's serial settings are accepted and have no effect.

    Raises:
        RuntimeError: the child could not start, died, or sent something that is not a report
            (the child is killed before ``__init__`` raises).
    """

    def __init__(self, *, rate_hz: float = 0.0, answer_timeout_ms: float = 0.0, listen: bool = False,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        args = ["listen"] if listen else [repr(rate_hz), repr(answer_timeout_ms)]
        cmd = [sys.executable, "-m", "edge.bench.plc_process", *args]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            stdout = self._pipes()[1]
            if not select.select([stdout], [], [], start_timeout)[0]:
                raise RuntimeError(f"PLC simulator process did not report its pty within {start_timeout:.0f} s")
            line = stdout.readline()
            try:
                self.port: str = json.loads(line)["port"]
            except (ValueError, TypeError, KeyError) as exc:
                status = self._proc.poll()
                raise RuntimeError(f"PLC simulator process sent {line[:200]!r} (status {status}) instead of "
                                   f'{{"port": ...}}: {exc!r}') from None
        except BaseException:
            self._kill()
            raise

    def block(self, tag: str, n: int) -> Any:
        """Send ``n`` triggers with part ids ``<tag>00000``...; returns the report (attributes as
        :class:`~edge.plc.simulator.SimReport`, ``latencies_ms`` included)."""
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"tag": tag, "n": n}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"PLC simulator process exited (status {self._proc.poll()})")
        try:
            return SimpleNamespace(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise RuntimeError(f"PLC simulator process sent {line[:200]!r}: {exc}") from None

    def finish(self) -> Any:
        """Listen-only child: end it and return its report (``free_run_results`` = ``RES`` lines
        counted). Raises RuntimeError if it died or sent no report."""
        stdin, stdout = self._pipes()
        stdin.close()
        line = stdout.readline()
        self._proc.wait(timeout=10)
        stdout.close()
        if not line:
            raise RuntimeError(f"PLC listener process exited (status {self._proc.poll()}) without a report")
        return SimpleNamespace(**json.loads(line))

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        return self._proc.stdin, self._proc.stdout

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        for pipe in self._pipes():
            pipe.close()

    def close(self) -> None:
        """End the child (EOF on its stdin; it closes the pty), killing it after 5 s."""
        try:
            self._pipes()[0].close()
            self._proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._pipes()[1].close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drain(port: Any) -> None:
    """Discard what arrived between blocks (heartbeats, a late RES), as pyserial's open did."""
    waiting = port.in_waiting
    if waiting:
        port.read(waiting)


def _child(argv: list[str]) -> int:
    from edge.plc.pty import DirectPty
    from edge.plc.simulator import PlcSimulator

    if argv[:1] == ["listen"]:
        return _listen()
    rate_hz, answer_timeout_ms = float(argv[0]), float(argv[1])
    with DirectPty() as pty:
        sys.stdout.write(json.dumps({"port": pty.path}) + "\n")
        sys.stdout.flush()
        for line in sys.stdin:
            cmd = json.loads(line)
            n = int(cmd["n"])
            ids = [f"{cmd['tag']}{i:05d}" for i in range(n)]
            _drain(pty.master)
            sim = PlcSimulator(pty.master, rate_hz=rate_hz, count=n, part_ids=ids,
                               answer_timeout_ms=answer_timeout_ms)
            rep = sim.run(timeout=n / rate_hz + answer_timeout_ms / 1000.0 + 10.0)
            out = rep.to_dict()
            out["latencies_ms"] = list(rep.latencies_ms)
            out["sent_at"] = rep.sent_at
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    return 0


def _listen() -> int:
    """Listen-only PLC (the free-run pipeline's ``RES,<seq>`` lines are counted) until EOF on stdin;
    then one report line."""
    from edge.plc.pty import DirectPty
    from edge.plc.simulator import PlcSimulator

    with DirectPty() as pty:
        sys.stdout.write(json.dumps({"port": pty.path}) + "\n")
        sys.stdout.flush()
        sim = PlcSimulator(pty.master, rate_hz=1.0, count=0, duration_s=10**6).start()
        sys.stdin.read()
        rep = sim.close()
        sys.stdout.write(json.dumps(rep.to_dict()) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
