"""EQC-ASCII/1 codec: exact bytes, every NAK reason, the line splitter, and property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from edge.plc.telegram import (
    MAX_LINE,
    NAK_REASONS,
    Heartbeat,
    LineSplitter,
    Nak,
    Ping,
    Pong,
    Result,
    TelegramError,
    Trigger,
    checksum,
    encode_failsafe,
    encode_heartbeat,
    encode_nak,
    encode_ping,
    encode_pong,
    encode_result,
    encode_trigger,
    parse_edge_line,
    parse_plc_line,
    sanitize_label,
)

PROPS = hsettings(database=None, deadline=None, max_examples=300)


def xor_hh(body: bytes) -> bytes:
    """Independent checksum: XOR of the bytes, two uppercase hex digits."""
    x = 0
    for b in body:
        x ^= b
    return b"%02X" % x


def framed(body: bytes) -> bytes:
    return body + b"*" + xor_hh(body) + b"\r\n"


# ---------------------------------------------------------------- checksum and encoders
def test_checksum_known_vectors() -> None:
    # hand-verified: P^O^N^G = 0x50^0x4F^0x4E^0x47 = 0x16
    assert checksum(b"PONG") == "16"
    # 0x48^0x42^0x54^0x2C^0x31^0x2C^0x4F^0x4B = 0x6B
    assert checksum(b"HBT,1,OK") == "6B"
    # NMEA 0183's textbook sentence $GPGLL,4916.45,N,12311.12,W,225444,A,*1D
    assert checksum(b"GPGLL,4916.45,N,12311.12,W,225444,A,") == "1D"
    assert checksum(b"") == "00"
    assert checksum(b"RES,A1234,F,crack,0.973") == xor_hh(b"RES,A1234,F,crack,0.973").decode()


def test_encoders_exact_bytes() -> None:
    assert encode_pong() == b"PONG*16\r\n"
    assert encode_heartbeat(1, True) == b"HBT,1,OK*6B\r\n"
    assert encode_heartbeat(7, False) == framed(b"HBT,7,FAULT")
    assert encode_heartbeat(65535, True) == framed(b"HBT,65535,OK")
    assert encode_result("A1234", False, "crack", 0.973) == b"RES,A1234,F,crack,0.973*1C\r\n"
    assert encode_result("A1234", True, "free", 0.5) == framed(b"RES,A1234,P,free,0.500")
    assert encode_result("A1", True, "free", 0.91, pass_code="OK", fail_code="NG") == framed(b"RES,A1,OK,free,0.910")
    assert encode_result("A1", False, "crack", 0.91, pass_code="OK", fail_code="NG") == framed(b"RES,A1,NG,crack,0.910")
    assert encode_result(17, True, "free", 1.0) == framed(b"RES,17,P,free,1.000")  # free-run sequence number
    assert encode_failsafe("P000001", "TIMEOUT") == framed(b"RES,P000001,F,TIMEOUT,0.000")
    assert encode_failsafe("x_-9", "NO_FRAME", fail_code="NG") == framed(b"RES,x_-9,NG,NO_FRAME,0.000")
    assert encode_failsafe("B2", "ERROR") == framed(b"RES,B2,F,ERROR,0.000")
    assert encode_nak("BAD_CHECKSUM") == framed(b"NAK,BAD_CHECKSUM")
    assert encode_trigger("A1234") == b"TRG,A1234*28\r\n"
    assert encode_trigger("A1234", with_checksum=False) == b"TRG,A1234\r\n"
    assert encode_ping() == framed(b"PING")
    assert encode_ping(with_checksum=False) == b"PING\r\n"


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.97349, b"0.973"), (0.9736, b"0.974"), (0.0004, b"0.000"), (0.9996, b"1.000"), (1, b"1.000"),
     (0, b"0.000"), (-0.0, b"0.000"), (np.float32(0.25), b"0.250"), (1.0000004, b"1.000"), (-1e-7, b"0.000")],
)
def test_probability_three_decimals(p: float, text: bytes) -> None:
    assert encode_result("A1", True, "free", p) == framed(b"RES,A1,P,free," + text)


def test_label_sanitising() -> None:
    assert sanitize_label("blow hole") == "blow_hole"
    assert sanitize_label("a,b*c\r\n") == "a_b_c__"
    assert sanitize_label("Ölfleck") == "_lfleck"
    assert sanitize_label("") == "_"
    assert sanitize_label("x" * 30) == "x" * 24
    assert encode_result("A1", False, "hair line,2", 0.8) == framed(b"RES,A1,F,hair_line_2,0.800")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode_result("", True, "free", 0.5), "part_id"),
        (lambda: encode_result("A" * 17, True, "free", 0.5), "part_id"),
        (lambda: encode_result("A B", True, "free", 0.5), "part_id"),
        (lambda: encode_result("Ä1", True, "free", 0.5), "part_id"),
        (lambda: encode_result(-1, True, "free", 0.5), "part_id"),
        (lambda: encode_result("A1", True, "free", float("nan")), "probability"),
        (lambda: encode_result("A1", True, "free", 1.01), "probability"),
        (lambda: encode_result("A1", True, "free", -0.01), "probability"),
        (lambda: encode_result("A1", True, "free", 0.5, pass_code="PASS1"), "pass_code"),
        (lambda: encode_failsafe("A1", "LATE"), "cause"),
        (lambda: encode_heartbeat(65536, True), "seq"),
        (lambda: encode_heartbeat(-1, True), "seq"),
        (lambda: encode_nak("WHATEVER"), "reason"),
        (lambda: encode_trigger("A/1"), "part_id"),
    ],
)
def test_encoder_errors_name_the_field(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- PLC -> edge parsing
def test_parse_plc_line_accepts() -> None:
    assert parse_plc_line(b"TRG,A1234") == Trigger("A1234")
    assert parse_plc_line(b"TRG,A1234\r\n") == Trigger("A1234")
    assert parse_plc_line(b"TRG,A1234\n") == Trigger("A1234")
    assert parse_plc_line(b"TRG,A1234*28") == Trigger("A1234")
    assert parse_plc_line(b"TRG,ab*" + xor_hh(b"TRG,ab").lower()) == Trigger("ab")  # lower-case hex tolerated
    assert parse_plc_line(b"TRG,A1234*28", checksum_required=True) == Trigger("A1234")
    assert parse_plc_line(b"TRG,_-zZ09" + b"x" * 10) == Trigger("_-zZ09" + "x" * 10)
    assert parse_plc_line(b"PING") == Ping()
    assert parse_plc_line(encode_ping()) == Ping()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"TRG,A1234*29", "BAD_CHECKSUM"),
        (b"TRG,A1234*2", "BAD_CHECKSUM"),
        (b"TRG,A1234*G8", "BAD_CHECKSUM"),
        (b"TRG,A1234*028", "BAD_CHECKSUM"),
        (b"PING*00", "BAD_CHECKSUM"),
        (b"FOO,A1", "UNKNOWN_CMD"),
        (b"trg,A1", "UNKNOWN_CMD"),
        (b"RES,A1,P,free,0.900", "UNKNOWN_CMD"),
        (b"TRG,", "BAD_PART_ID"),
        (b"TRG,A/1", "BAD_PART_ID"),
        (b"TRG,A 1", "BAD_PART_ID"),
        (b"TRG," + b"A" * 17, "BAD_PART_ID"),
        (b"TRG," + b"A" * (MAX_LINE - 3), "TOO_LONG"),
        (b"X" * 100, "TOO_LONG"),
        (b"TRG,A\xff", "NON_ASCII"),
        (b"TRG,A\x00", "NON_ASCII"),
        (b"TRG,\tA1", "NON_ASCII"),
        (b"TRG,A1\r", "NON_ASCII"),  # a lone CR is not a line end
        (b"TRG", "BAD_FORMAT"),
        (b"TRG,A1,B2", "BAD_FORMAT"),
        (b"PING,1", "BAD_FORMAT"),
        (b"", "BAD_FORMAT"),
    ],
)
def test_parse_plc_line_reasons(line: bytes, reason: str) -> None:
    with pytest.raises(TelegramError) as info:
        parse_plc_line(line)
    assert info.value.reason == reason
    assert reason in NAK_REASONS
    assert encode_nak(info.value.reason) == framed(b"NAK," + reason.encode())


def test_missing_checksum_only_when_required() -> None:
    assert parse_plc_line(b"TRG,A1") == Trigger("A1")
    with pytest.raises(TelegramError) as info:
        parse_plc_line(b"TRG,A1", checksum_required=True)
    assert info.value.reason == "MISSING_CHECKSUM"
    with pytest.raises(TelegramError, match="MISSING_CHECKSUM"):
        parse_plc_line(b"PING\r\n", checksum_required=True)


def test_line_length_boundary() -> None:
    line64 = b"TRG,A1*" + b"0" * (MAX_LINE - 7)  # 64 bytes: length is fine, the checksum field is not
    assert len(line64) == MAX_LINE
    with pytest.raises(TelegramError) as info:
        parse_plc_line(line64)
    assert info.value.reason == "BAD_CHECKSUM"
    with pytest.raises(TelegramError) as info:
        parse_plc_line(line64 + b"0")
    assert info.value.reason == "TOO_LONG"


# ---------------------------------------------------------------- edge -> PLC parsing
def test_parse_edge_line_round_trip() -> None:
    assert parse_edge_line(encode_result("A1234", False, "crack", 0.973)) == Result("A1234", "F", "crack", 0.973)
    r = parse_edge_line(encode_failsafe("A1", "NO_FRAME"))
    assert isinstance(r, Result) and r.failsafe == "NO_FRAME" and r.code == "F"
    assert parse_edge_line(encode_result("A1", False, "crack", 0.0)).failsafe is None  # type: ignore[union-attr]
    assert parse_edge_line(encode_heartbeat(3, False)) == Heartbeat(3, False)
    assert parse_edge_line(encode_pong()) == Pong()
    assert parse_edge_line(encode_nak("TOO_LONG")) == Nak("TOO_LONG")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"PONG", "MISSING_CHECKSUM"),
        (b"PONG*17", "BAD_CHECKSUM"),
        (b"HBT,1,OK*6b", "BAD_CHECKSUM"),  # the edge always sends upper-case hex
        (framed(b"RES,A1,F,crack"), "BAD_FORMAT"),
        (framed(b"RES,A1,F,crack,0.97"), "BAD_FORMAT"),
        (framed(b"RES,A1,F,crack,1.500"), "BAD_FORMAT"),
        (framed(b"RES,A1,F,cr ack,0.970"), "BAD_FORMAT"),
        (framed(b"RES,A/1,F,crack,0.970"), "BAD_PART_ID"),
        (framed(b"HBT,1,MAYBE"), "BAD_FORMAT"),
        (framed(b"HBT,70000,OK"), "BAD_FORMAT"),
        (framed(b"NAK,NOPE"), "BAD_FORMAT"),
        (framed(b"PONG,1"), "BAD_FORMAT"),
        (framed(b"TRG,A1"), "UNKNOWN_CMD"),
    ],
)
def test_parse_edge_line_rejects(line: bytes, reason: str) -> None:
    with pytest.raises(TelegramError) as info:
        parse_edge_line(line)
    assert info.value.reason == reason


# ---------------------------------------------------------------- line splitter
def test_splitter_line_endings_and_chunking() -> None:
    stream = b"TRG,A1\r\n\r\n\nPING\nTRG,B2*" + xor_hh(b"TRG,B2") + b"\r\n"
    whole = LineSplitter().feed(stream)
    assert whole == [b"TRG,A1", b"PING", b"TRG,B2*" + xor_hh(b"TRG,B2")]
    sp = LineSplitter()
    bytewise = [item for i in range(len(stream)) for item in sp.feed(stream[i : i + 1])]
    assert bytewise == whole
    assert sp.pending == 0


def test_splitter_overlong_line_one_error_bounded_buffer() -> None:
    sp = LineSplitter()
    out = []
    for _ in range(100):  # 10 000 bytes without a newline
        out += sp.feed(b"Z" * 100)
        assert sp.pending <= MAX_LINE + 1
    assert [type(x) for x in out] == [TelegramError]
    assert out[0].reason == "TOO_LONG"  # type: ignore[union-attr]
    assert out[0].line == b"Z" * 80  # type: ignore[union-attr]  # the line's first bytes, for the log
    assert sp.feed(b"tail\nTRG,A1\r\n") == [b"TRG,A1"]  # rest of the long line dropped, next one fine


def test_splitter_boundaries() -> None:
    ok64 = b"P" * MAX_LINE
    assert LineSplitter().feed(ok64 + b"\r\n") == [ok64]
    assert LineSplitter().feed(ok64 + b"\n") == [ok64]
    out = LineSplitter().feed(ok64 + b"P\n")
    assert len(out) == 1 and isinstance(out[0], TelegramError) and out[0].reason == "TOO_LONG"
    out = LineSplitter().feed(ok64 + b"PP\nPING\n")
    assert isinstance(out[0], TelegramError) and out[1:] == [b"PING"]
    sp = LineSplitter()
    sp.feed(b"TRG,A")
    sp.reset()
    assert sp.feed(b"1\n") == [b"1"]


# ---------------------------------------------------------------- properties
part_ids = st.text(alphabet="ABCXYZabcxyz0123456789_-", min_size=1, max_size=16)


@PROPS
@given(part_ids, st.booleans(), st.text(max_size=40), st.floats(min_value=0.0, max_value=1.0))
def test_property_result_round_trip(part_id: str, passed: bool, label: str, p: float) -> None:
    line = encode_result(part_id, passed, label, p)
    assert len(line) <= MAX_LINE + 2 and line.endswith(b"\r\n")
    assert line[:-2].endswith(b"*" + xor_hh(line[: line.rindex(b"*")]))
    r = parse_edge_line(line)
    assert r == Result(part_id, "P" if passed else "F", sanitize_label(label), float(f"{p:.3f}"))
    assert abs(r.probability - p) <= 0.0005 + 1e-12  # type: ignore[union-attr]


@PROPS
@given(st.integers(0, 65535), st.booleans(), part_ids, st.sampled_from(["TIMEOUT", "NO_FRAME", "ERROR"]))
def test_property_other_round_trips(seq: int, ok: bool, part_id: str, cause: str) -> None:
    assert parse_edge_line(encode_heartbeat(seq, ok)) == Heartbeat(seq, ok)
    assert parse_edge_line(encode_failsafe(part_id, cause)).failsafe == cause  # type: ignore[union-attr]
    assert parse_plc_line(encode_trigger(part_id)) == Trigger(part_id)
    assert parse_plc_line(encode_trigger(part_id, with_checksum=False), checksum_required=False) == Trigger(part_id)


plc_like = st.one_of(
    st.binary(max_size=120),
    st.text(alphabet="TRGPING,*0123456789ABCDEFabcdef_- \r\n\x00\x7f", max_size=80).map(str.encode),
)


@PROPS
@given(plc_like, st.booleans())
def test_property_parse_plc_line_only_raises_telegram_error(data: bytes, required: bool) -> None:
    try:
        tel = parse_plc_line(data, checksum_required=required)
    except TelegramError as err:
        assert err.reason in NAK_REASONS
    else:
        assert isinstance(tel, (Trigger, Ping))


@PROPS
@given(st.binary(max_size=120))
def test_property_parse_edge_line_only_raises_telegram_error(data: bytes) -> None:
    try:
        parse_edge_line(data)
    except TelegramError:
        pass


@PROPS
@given(st.lists(st.binary(max_size=90), max_size=12), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_property_splitter_chunking_invariant(parts: list[bytes], sizes: list[int]) -> None:
    stream = b"\n".join(parts)
    whole = LineSplitter().feed(stream)
    sp = LineSplitter()
    chunked: list[bytes | TelegramError] = []
    pos, i = 0, 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        chunked += sp.feed(stream[pos : pos + n])
        assert sp.pending <= MAX_LINE + 1
        pos, i = pos + n, i + 1

    def norm(items: list[bytes | TelegramError]) -> list[object]:
        return [x.reason if isinstance(x, TelegramError) else x for x in items]

    assert norm(chunked) == norm(whole)
    assert all(isinstance(x, TelegramError) or (0 < len(x) <= MAX_LINE and b"\n" not in x) for x in whole)
