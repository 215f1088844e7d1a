"""The trigger run's PLC in a process of its own, as a real PLC is a device of its own.

Why: run as a thread of the bench process, :class:`~edge.plc.simulator.PlcSimulator` shares the
GIL with the station it measures: when a ``RES`` arrives while a station thread runs Python code
(building the result, publishing it), the simulator's reader cannot take its arrival time until
that thread lets go of the GIL (up to ``sys.getswitchinterval()``, 5 ms). That wait belongs to
the measuring device, not to the product. Here the simulator runs in a child interpreter
(``python -m edge.bench.plc_process``), driven over stdin/stdout with one JSON object per line:

    -> {"tag": "B000", "n": 200}
    <- SimReport.to_dict() + {"latencies_ms": [...]}

Sources: :mod:`subprocess` (pipes, line buffering); the GIL switch interval:
``sys.setswitchinterval`` in the Python library reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


class PlcProcess:
    """A child process playing the PLC on ``port`` (the far end of a pty pair).

    Args:
        port: serial port path the simulator opens.
        rate_hz: triggers per second. answer_timeout_ms: how long it waits for each RES.
        baudrate: serial speed (baud).

    Raises:
        RuntimeError: the child could not start, died, or sent something that is not a report.
    """

    def __init__(self, port: str, *, rate_hz: float, answer_timeout_ms: float, baudrate: int) -> None:
        cmd = [sys.executable, "-m", "edge.bench.plc_process", port, repr(rate_hz), repr(answer_timeout_ms),
               str(baudrate)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

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

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        return self._proc.stdin, self._proc.stdout

    def close(self) -> None:
        """End the child (EOF on its stdin), killing it after 5 s."""
        try:
            self._pipes()[0].close()
            self._proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(argv: list[str]) -> int:
    from edge.plc.simulator import PlcSimulator

    port, rate_hz, answer_timeout_ms, baudrate = argv[0], float(argv[1]), float(argv[2]), int(argv[3])
    for line in sys.stdin:
        cmd = json.loads(line)
        n = int(cmd["n"])
        ids = [f"{cmd['tag']}{i:05d}" for i in range(n)]
        sim = PlcSimulator(port, rate_hz=rate_hz, count=n, part_ids=ids, answer_timeout_ms=answer_timeout_ms,
                           baudrate=baudrate)
        rep = sim.run(timeout=n / rate_hz + answer_timeout_ms / 1000.0 + 10.0)
        out = rep.to_dict()
        out["latencies_ms"] = list(rep.latencies_ms)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
