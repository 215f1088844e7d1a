"""EQC-ASCII/1: the telegram codec between edgeqc and the PLC (pure bytes <-> objects, no I/O).

Protocol reference (the PLC integrator's version with examples is ``docs/plc-protocol.md``):

* One telegram per line, ASCII, terminated by CR LF. Fields are separated by ``,``.
* Checksum suffix ``*HH``: two uppercase hex digits of the XOR of every byte before the ``*``
  (the NMEA 0183 checksum, without NMEA's leading ``$``). Example: ``PONG`` -> ``PONG*16``;
  NMEA 0183's own example ``$GPGLL,4916.45,N,12311.12,W,225444,A,*1D`` checks with the same function.
* At most :data:`MAX_LINE` (64) bytes per line, line ending not counted.

PLC -> edge (checksum optional unless ``plc.checksum_required``; when present it is verified; hex
digits may be upper or lower case; LF or CR LF line endings; empty lines are ignored):

======================  ===========================================================
``TRG,<part_id>``       a part is in front of the camera; part id 1-16 chars ``[A-Za-z0-9_-]``
``PING``                the edge answers ``PONG*HH``
======================  ===========================================================

Edge -> PLC (always with checksum, always CR LF):

=======================================================  =========================================
``RES,<part_id>,<P|F>,<label>,<p.ppp>*HH``               exactly one per TRG (codes configurable)
``RES,<part_id>,F,<TIMEOUT|NO_FRAME|ERROR>,0.000*HH``    fail-safe result
``HBT,<seq>,<OK|FAULT>*HH``                              heartbeat; seq 0-65535, wraps to 0
``PONG*HH``                                              answer to PING
``NAK,<reason>*HH``                                      malformed PLC telegram, see :data:`NAK_REASONS`
=======================================================  =========================================

Labels are restricted to ``[A-Za-z0-9_-]`` (other characters become ``_``) and cut to
:data:`MAX_LABEL` characters so that every edge telegram also fits in 64 bytes. In free-run mode
the part id of a RES is the sequence number of the inspected frame.

Sources: NMEA 0183 (checksum definition); the EQC-ASCII/1 issue (everything else).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import reduce
from operator import xor

PROTOCOL = "EQC-ASCII/1"
MAX_LINE = 64
"""Longest accepted line in bytes, without the line ending."""
MAX_LABEL = 24
"""Labels longer than this (in characters) are cut, so a RES never exceeds :data:`MAX_LINE`."""
EOL = b"\r\n"
HEARTBEAT_SEQ_MODULO = 65536
"""Heartbeat sequence numbers run 0..65535 and wrap to 0 (fits a PLC UINT/WORD)."""

FAILSAFE_CAUSES = ("TIMEOUT", "NO_FRAME", "ERROR")
"""Causes of a fail-safe RES (``RES,<id>,F,<cause>,0.000``)."""

NAK_REASONS: dict[str, str] = {
    "BAD_CHECKSUM": "the *HH suffix is not two hex digits or does not match the XOR of the bytes before '*'",
    "MISSING_CHECKSUM": "no *HH suffix although plc.checksum_required is true",
    "UNKNOWN_CMD": "the first field is not TRG or PING (commands are upper case)",
    "BAD_PART_ID": "the part id is not 1-16 characters of [A-Za-z0-9_-]",
    "TOO_LONG": f"the line exceeds {MAX_LINE} bytes; discarded up to the next LF, one NAK per line",
    "NON_ASCII": "a byte outside printable ASCII 0x20-0x7E (e.g. line noise, wrong baud rate or parity)",
    "BAD_FORMAT": "wrong number of fields for the command, or an empty telegram",
}
"""Every NAK reason token the edge sends, with its meaning. Tokens are stable (part of the protocol)."""

_PART_ID_RE = re.compile(rb"[A-Za-z0-9_-]{1,16}\Z")
_LABEL_RE = re.compile(rb"[A-Za-z0-9_-]{1,%d}\Z" % MAX_LABEL)
_CODE_RE = re.compile(rb"[A-Za-z0-9]{1,4}\Z")
_PROB_RE = re.compile(rb"[01]\.[0-9]{3}\Z")
_SEQ_RE = re.compile(rb"[0-9]{1,5}\Z")
_HEX = b"0123456789ABCDEFabcdef"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_-]")


class TelegramError(ValueError):
    """A telegram is malformed. ``reason`` is the NAK token (a key of :data:`NAK_REASONS`);
    ``line``: the offending bytes (the first 80 of a line too long to keep), for the log."""

    def __init__(self, reason: str, detail: str = "", line: bytes = b"") -> None:
        self.reason = reason
        self.detail = detail
        self.line = line
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Trigger:
    """``TRG,<part_id>`` from the PLC."""

    part_id: str


@dataclass(frozen=True)
class Ping:
    """``PING`` from the PLC."""


@dataclass(frozen=True)
class Result:
    """``RES`` from the edge. ``probability`` is the value as sent (3 decimals)."""

    part_id: str
    code: str
    label: str
    probability: float

    @property
    def failsafe(self) -> str | None:
        """The fail-safe cause (``TIMEOUT``/``NO_FRAME``/``ERROR``) or None for a real verdict."""
        if self.label in FAILSAFE_CAUSES and self.probability == 0.0:
            return self.label
        return None


@dataclass(frozen=True)
class Heartbeat:
    """``HBT,<seq>,<OK|FAULT>`` from the edge."""

    seq: int
    ok: bool


@dataclass(frozen=True)
class Pong:
    """``PONG`` from the edge."""


@dataclass(frozen=True)
class Nak:
    """``NAK,<reason>`` from the edge."""

    reason: str


EdgeTelegram = Result | Heartbeat | Pong | Nak


def checksum(body: bytes) -> str:
    """XOR of all bytes of ``body`` as two uppercase hex digits (NMEA 0183 checksum).

    >>> checksum(b"PONG")
    '16'
    """
    return f"{reduce(xor, body, 0):02X}"


def _frame(body: bytes) -> bytes:
    return body + b"*" + checksum(body).encode("ascii") + EOL


def _part_id_bytes(part_id: str | int) -> bytes:
    if isinstance(part_id, int) and not isinstance(part_id, bool):
        if part_id < 0:
            raise ValueError(f"part_id (sequence number) must be >= 0, got {part_id}")
        part_id = str(part_id)
    if not isinstance(part_id, str):
        raise TypeError(f"part_id must be str or int, got {type(part_id).__name__}")
    raw = part_id.encode("ascii", errors="replace")
    if not _PART_ID_RE.match(raw):
        raise ValueError(f"part_id {part_id!r} must be 1-16 characters of [A-Za-z0-9_-]")
    return raw


def sanitize_label(label: str) -> str:
    """Label as sent in a RES: characters outside ``[A-Za-z0-9_-]`` become ``_``; cut to
    :data:`MAX_LABEL` characters; an empty label becomes ``_``."""
    return _LABEL_BAD.sub("_", label)[:MAX_LABEL] or "_"


def _code_bytes(code: str, name: str) -> bytes:
    raw = code.encode("ascii", errors="replace")
    if not _CODE_RE.match(raw):
        raise ValueError(f"{name} {code!r} must be 1-4 characters of [A-Za-z0-9]")
    return raw


def encode_result(
    part_id: str | int,
    passed: bool,
    label: str,
    probability: float,
    pass_code: str = "P",
    fail_code: str = "F",
) -> bytes:
    """``RES,<part_id>,<code>,<label>,<p.ppp>*HH\\r\\n``.

    Args:
        part_id: the TRG's part id, or the sequence number (int >= 0) in free-run mode.
        passed: verdict; selects ``pass_code`` or ``fail_code``.
        label: class name; sanitised with :func:`sanitize_label`.
        probability: in [0, 1] (float32 rounding up to 1e-6 outside is clamped); sent rounded to
            3 decimals.

    Raises:
        TypeError: part id neither str nor int.
        ValueError: part id not 1-16 of ``[A-Za-z0-9_-]``, probability not finite or outside [0, 1],
            a code not 1-4 of ``[A-Za-z0-9]``.
    """
    p = float(probability)
    if not math.isfinite(p) or p < -1e-6 or p > 1.0 + 1e-6:
        raise ValueError(f"probability must be a finite value in [0, 1], got {probability!r}")
    p = 0.0 if p <= 0.0 else min(p, 1.0)  # also turns -0.0 into 0.0
    code = _code_bytes(pass_code, "pass_code") if passed else _code_bytes(fail_code, "fail_code")
    body = b"RES,%s,%s,%s,%.3f" % (_part_id_bytes(part_id), code, sanitize_label(label).encode("ascii"), p)
    return _frame(body)


def encode_failsafe(part_id: str | int, cause: str, fail_code: str = "F") -> bytes:
    """Fail-safe ``RES,<part_id>,F,<cause>,0.000*HH\\r\\n``.

    Raises:
        ValueError: ``cause`` not one of :data:`FAILSAFE_CAUSES`, or a bad part id / fail code.
    """
    if cause not in FAILSAFE_CAUSES:
        raise ValueError(f"fail-safe cause must be one of {FAILSAFE_CAUSES}, got {cause!r}")
    body = b"RES,%s,%s,%s,0.000" % (_part_id_bytes(part_id), _code_bytes(fail_code, "fail_code"), cause.encode())
    return _frame(body)


def encode_heartbeat(seq: int, ok: bool) -> bytes:
    """``HBT,<seq>,<OK|FAULT>*HH\\r\\n``; ``seq`` in 0..65535.

    Raises:
        ValueError: ``seq`` out of range.
    """
    if not 0 <= seq < HEARTBEAT_SEQ_MODULO:
        raise ValueError(f"heartbeat seq must be in 0..{HEARTBEAT_SEQ_MODULO - 1}, got {seq}")
    return _frame(b"HBT,%d,%s" % (seq, b"OK" if ok else b"FAULT"))


def encode_pong() -> bytes:
    """``PONG*16\\r\\n``."""
    return _frame(b"PONG")


def encode_nak(reason: str) -> bytes:
    """``NAK,<reason>*HH\\r\\n``.

    Raises:
        ValueError: ``reason`` not a key of :data:`NAK_REASONS`.
    """
    if reason not in NAK_REASONS:
        raise ValueError(f"NAK reason must be one of {sorted(NAK_REASONS)}, got {reason!r}")
    return _frame(b"NAK," + reason.encode("ascii"))


def encode_trigger(part_id: str | int, with_checksum: bool = True) -> bytes:
    """``TRG,<part_id>[*HH]\\r\\n`` (the PLC side; for the simulator and tests).

    Raises:
        ValueError: bad part id.
    """
    body = b"TRG," + _part_id_bytes(part_id)
    return _frame(body) if with_checksum else body + EOL


def encode_ping(with_checksum: bool = True) -> bytes:
    """``PING[*HH]\\r\\n`` (the PLC side; for the simulator and tests)."""
    return _frame(b"PING") if with_checksum else b"PING" + EOL


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def _split_checksum(line: bytes, required: bool, strict: bool) -> bytes:
    """Verify and remove the ``*HH`` suffix; return the body."""
    star = line.rfind(b"*")
    if star < 0:
        if required:
            raise TelegramError("MISSING_CHECKSUM", f"no *HH suffix in {line!r}")
        return line
    body, given = line[:star], line[star + 1 :]
    if len(given) != 2 or any(c not in _HEX for c in given):
        raise TelegramError("BAD_CHECKSUM", f"checksum field {given!r} is not two hex digits")
    expected = checksum(body)
    text = given.decode("ascii")
    if (text if strict else text.upper()) != expected:
        raise TelegramError("BAD_CHECKSUM", f"got {text}, computed {expected} over {body!r}")
    return body


def _check_bytes(line: bytes) -> None:
    if len(line) > MAX_LINE:
        raise TelegramError("TOO_LONG", f"{len(line)} bytes, at most {MAX_LINE}")
    for i, c in enumerate(line):
        if c < 0x20 or c > 0x7E:
            raise TelegramError("NON_ASCII", f"byte 0x{c:02X} at offset {i}")
    if not line:
        raise TelegramError("BAD_FORMAT", "empty telegram")


def parse_plc_line(line: bytes, checksum_required: bool = False) -> Trigger | Ping:
    """Parse one PLC telegram (line ending optional: LF or CR LF is stripped).

    Checks in this order: length, bytes, checksum, command, fields, part id.

    Raises:
        TelegramError: never anything else, for any input bytes; ``reason`` is the NAK token.
    """
    line = _strip_eol(bytes(line))
    _check_bytes(line)
    body = _split_checksum(line, checksum_required, strict=False)
    fields = body.split(b",")
    cmd = fields[0]
    if cmd == b"TRG":
        if len(fields) != 2:
            raise TelegramError("BAD_FORMAT", f"TRG needs exactly one field (the part id), got {body!r}")
        if not _PART_ID_RE.match(fields[1]):
            raise TelegramError("BAD_PART_ID", f"{fields[1]!r} is not 1-16 characters of [A-Za-z0-9_-]")
        return Trigger(fields[1].decode("ascii"))
    if cmd == b"PING":
        if len(fields) != 1:
            raise TelegramError("BAD_FORMAT", f"PING takes no fields, got {body!r}")
        return Ping()
    raise TelegramError("UNKNOWN_CMD", f"{cmd!r} is not TRG or PING")


def parse_edge_line(line: bytes) -> EdgeTelegram:
    """Parse and verify one edge telegram (RES/HBT/PONG/NAK); the checksum is mandatory and
    must be uppercase hex. Used by the simulator and the tests.

    Raises:
        TelegramError: malformed telegram (``reason`` as for the NAK tokens, plus BAD_FORMAT for
            wrong fields and UNKNOWN_CMD for an unknown first field).
    """
    line = _strip_eol(bytes(line))
    _check_bytes(line)
    body = _split_checksum(line, required=True, strict=True)
    fields = body.split(b",")
    cmd, args = fields[0], fields[1:]
    if cmd == b"RES":
        if len(args) != 4:
            raise TelegramError("BAD_FORMAT", f"RES needs 4 fields, got {body!r}")
        part, code, label, prob = args
        if not _PART_ID_RE.match(part):
            raise TelegramError("BAD_PART_ID", f"{part!r}")
        if not _CODE_RE.match(code) or not _LABEL_RE.match(label) or not _PROB_RE.match(prob):
            raise TelegramError("BAD_FORMAT", f"RES code/label/probability malformed in {body!r}")
        p = float(prob)
        if p > 1.0:
            raise TelegramError("BAD_FORMAT", f"probability {prob!r} above 1.000")
        return Result(part.decode(), code.decode(), label.decode(), p)
    if cmd == b"HBT":
        if len(args) != 2 or not _SEQ_RE.match(args[0]) or args[1] not in (b"OK", b"FAULT"):
            raise TelegramError("BAD_FORMAT", f"HBT needs <seq>,<OK|FAULT>, got {body!r}")
        seq = int(args[0])
        if seq >= HEARTBEAT_SEQ_MODULO:
            raise TelegramError("BAD_FORMAT", f"HBT seq {seq} above {HEARTBEAT_SEQ_MODULO - 1}")
        return Heartbeat(seq, args[1] == b"OK")
    if cmd == b"PONG":
        if args:
            raise TelegramError("BAD_FORMAT", f"PONG takes no fields, got {body!r}")
        return Pong()
    if cmd == b"NAK":
        if len(args) != 1 or args[0].decode() not in NAK_REASONS:
            raise TelegramError("BAD_FORMAT", f"NAK needs one known reason, got {body!r}")
        return Nak(args[0].decode())
    raise TelegramError("UNKNOWN_CMD", f"{cmd!r} is not RES, HBT, PONG or NAK")


class LineSplitter:
    """Cut a byte stream into lines with a bounded buffer.

    :meth:`feed` returns complete lines (bytes, line ending and a CR before the LF removed; empty
    lines dropped) and, for a line longer than ``max_line`` bytes, one
    ``TelegramError("TOO_LONG")``; the rest of that line up to the next LF is discarded. The buffer
    never holds more than ``max_line + 1`` bytes.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes buffered of an unfinished line."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial line (e.g. after the port was reopened)."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | TelegramError]:
        """Add received bytes; return the lines and overlong-line errors completed by them, in order."""
        out: list[bytes | TelegramError] = []
        limit = self.max_line + 1  # room for the CR of a CR LF ending
        start, n = 0, len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            if not self._discarding:
                if len(self._buf) + (end - start) > limit:
                    head = bytes(self._buf[:80]) + data[start:start + max(0, 80 - len(self._buf))]
                    self._buf.clear()
                    self._discarding = True
                    out.append(TelegramError("TOO_LONG", f"line exceeds {self.max_line} bytes without LF", head))
                else:
                    self._buf += data[start:end]
            if nl < 0:
                break
            if not self._discarding:
                line = bytes(self._buf)
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_line:
                    out.append(TelegramError("TOO_LONG", f"{len(line)} bytes, at most {self.max_line}", line[:80]))
                elif line:
                    out.append(line)
            self._buf.clear()
            self._discarding = False
            start = nl + 1
        return out
