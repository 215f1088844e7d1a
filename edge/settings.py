"""The one settings tree of edgeqc (pydantic-settings).

Sources, highest priority first: keyword arguments (CLI), ``EDGEQC_…`` environment variables
(nested with ``__``, e.g. ``EDGEQC_PLC__PORT=/dev/ttyUSB0``), the TOML file given with
``--config``, then the defaults below. A wrong value raises :class:`ConfigError` naming the field
path, the value and what was expected.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PART_ID_PATTERN = r"^[A-Za-z0-9_-]{1,16}$"
ZMQ_ENDPOINT_PATTERN = r"^(tcp|ipc|inproc|pgm|epgm|ws|wss)://\S+$"
HOST_PATTERN = r"^[A-Za-z0-9.:-]+$"
# Upper bound of every time setting in ms (1 h): larger values make no sense on a line, and
# threading waits overflow on huge timeouts (OverflowError: timestamp out of range).
MAX_MS = 3_600_000
# Upper bound of the retention settings in days (100 years = keep everything).
MAX_DAYS = 36_500.0
PositiveMs = Annotated[int, Field(gt=0, le=MAX_MS)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _mentions(annotation: Any, *types: type) -> bool:
    """True if ``annotation`` is one of ``types`` or a union/container/Annotated with one in it."""
    return annotation in types or any(_mentions(a, *types) for a in get_args(annotation))


def _has_bool(value: Any) -> bool:
    """True if ``value`` is a bool, or a list/tuple/dict holding one (one level: our fields are flat)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(isinstance(x, bool) for x in value)


class _Section(BaseModel):
    # allow_inf_nan=False: inf / nan (TOML ``inf``, ``nan``, env "inf") are refused by every float field
    # of every section ("Input should be a finite number"), as int fields already do.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads TOML true/false as 1/0 for int and float fields: a typo like
        # `jpeg_quality = true` became quality 1 and `baudrate = true` 1 baud, silently
        field = cls.model_fields.get(info.field_name or "")
        if (field is not None and _has_bool(value) and _mentions(field.annotation, int, float)
                and not _mentions(field.annotation, bool)):
            raise ValueError("expected a number, got true/false")
        return value


class CameraSettings(_Section):
    source: str = Field(
        "demo",
        min_length=1,
        description=(
            "Frame source: a device index ('0') or '/dev/videoN' (V4L2); a GStreamer pipeline ending in "
            "'appsink'; an rtsp:// or http(s):// URL; a video file; a folder of images (played in sorted "
            "relative-path order); or 'demo' (synthetic parts rendered by edgeqc itself)."
        ),
    )
    width: int | None = Field(None, gt=0, description="Requested capture width in px (V4L2/USB only); None = camera default.")
    height: int | None = Field(None, gt=0, description="Requested capture height in px (V4L2/USB only); None = camera default.")
    fps: float | None = Field(None, ge=0.001, description="Requested camera frame rate in frames/s (>= 0.001); for folder/video sources in free-run mode, the replay rate (None = as fast as inspected).")
    open_timeout_ms: int = Field(5000, gt=0, le=MAX_MS, description="Bound on opening the source, in ms (1..3 600 000).")
    read_timeout_ms: int = Field(2000, gt=0, le=MAX_MS, description="A source that delivers no frame for this long is declared lost and reopened, in ms (1..3 600 000).")
    reconnect_backoff_ms: list[PositiveMs] = Field(
        [250, 500, 1000, 2000, 5000],
        min_length=1,
        description="Waits between reopen attempts of a lost source, in ms (each 1..3 600 000); the last value repeats.",
    )
    loop: bool = Field(False, description="Folder/video sources: start again at the first frame after the last one. "
                       "`edgeqc run` with camera.source = plc.port = 'demo' loops unless this is set.")
    demo_parts: int = Field(60, gt=0, description="'demo' source: number of synthetic part images rendered.")


    @field_validator("source", mode="before")
    @classmethod
    def _index_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ModelSettings(_Section):
    path: str = Field("demo", min_length=1, description="ONNX model (CPU) or TensorRT .engine (GPU); 'demo' = the built-in demo classifier.")
    backend: Literal["auto", "onnxruntime", "tensorrt", "noop"] = Field(
        "auto", description="Inference backend; auto = tensorrt for .engine/.plan files, else onnxruntime."
    )
    labels: list[str] | None = Field(None, description="Class names in output order; overrides ONNX metadata and labels.txt.")
    input_size: tuple[int, int] | None = Field(None, description="Model input (height, width) in px; default from the model.")
    resize: Literal["stretch", "center_crop", "letterbox"] | None = Field(None, description="Resize mode; default from the model metadata, else stretch.")
    interpolation: Literal["pillow_bilinear", "area", "linear", "nearest", "cubic"] | None = Field(
        None, description="Resize interpolation; pillow_bilinear = Pillow's antialiased bilinear (what torchvision/Pillow training pipelines use)."
    )
    channel_order: Literal["RGB", "BGR"] | None = Field(None, description="Channel order the model expects; default RGB.")
    scale: float | None = Field(None, gt=0, description="Pixel scale applied before mean/std; default 1/255 (1/65535 for 16-bit frames is derived from it).")
    mean: tuple[float, float, float] | None = Field(None, description="Per-channel mean subtracted after scaling (model channel order).")
    std: tuple[float, float, float] | None = Field(None, description="Per-channel std divided after mean subtraction (model channel order).")
    output: Literal["auto", "logits", "probabilities"] = Field("auto", description="What the model outputs; auto detects a final Softmax.")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = auto: one core fewer than the CPUs this process may use (1..4), the free core runs capture, PLC and outputs. More than the usable CPUs is lowered to that count (warning).")
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description=(
            "CPU (ONNX Runtime) only: with a '<name>.int8.onnx' beside the model, auto runs whichever is faster "
            "on this CPU (timed at start; FP32 wins ties), fp32/int8 force one."))
    max_batch: int = Field(8, ge=1, description="Largest batch the runtime forms from pending triggers.")


    @field_validator("input_size")
    @classmethod
    def _size_positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"Input should be two positive pixel counts (height, width), got {list(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"Input should be three values > 0 (it divides), got {list(v)}")
        return v


class DecisionSettings(_Section):
    pass_classes: list[str] = Field(["free"], min_length=1, description="Labels that mean the part is good.")
    min_pass_probability: float = Field(0.5, ge=0.0, le=1.0, description="A pass needs its top-1 pass class at or above this probability; otherwise fail 'uncertain'.")
    class_min_probability: dict[str, Probability] = Field(
        default_factory=dict, description="Optional per-class minimum probability for a pass class (overrides min_pass_probability)."
    )


class PlcSettings(_Section):
    enabled: bool = Field(True, description="Talk to a PLC over serial. False = free-run without telegrams.")
    port: str = Field("demo", min_length=1, description="Serial port ('/dev/ttyUSB0'), a pyserial URL ('socket://host:port', 'rfc2217://host:port'; not 'loop://', which echoes the station's own telegrams) or 'demo' (built-in PLC simulator on a pty pair).")
    baudrate: int = Field(115200, gt=0, description="Serial speed in baud.")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O", "M", "S"] = Field("N", description="Parity: N(one), E(ven), O(dd), M(ark), S(pace).")
    stopbits: float = Field(1, description="Stop bits: 1, 1.5 or 2.")
    read_timeout_ms: int = Field(100, gt=0, le=MAX_MS, description="Serial read timeout in ms (bounds how long the reader blocks; 1..3 600 000).")
    write_timeout_ms: int = Field(100, gt=0, le=MAX_MS, description="Serial write timeout in ms (always set: a stuck port never blocks; 1..3 600 000).")
    reopen_backoff_ms: list[PositiveMs] = Field([250, 500, 1000, 2000, 5000], min_length=1, description="Waits between reopen attempts of a lost port, in ms (each 1..3 600 000); the last repeats.")
    mode: Literal["trigger", "free_run"] = Field("trigger", description="trigger: one RES per TRG. free_run: every Nth frame inspected, RES,<sequence number>,….")
    free_run_every: int = Field(1, ge=1, description="free_run: inspect every Nth captured frame.")
    trigger_delay_ms: float = Field(0.0, ge=0, le=MAX_MS, description="Use the first frame captured at least this long after TRG arrived, in ms (0..3 600 000).")
    deadline_ms: float = Field(250.0, gt=0, le=MAX_MS, description="No result within this many ms after TRG -> fail-safe RES,<id>,F,TIMEOUT (finite, > 0 and <= 3 600 000 ms = 1 h).")
    heartbeat_interval_ms: float = Field(1000.0, gt=0, le=MAX_MS, description="HBT telegram period in ms (finite, > 0 and <= 3 600 000 ms = 1 h).")
    pass_code: str = Field("P", pattern=r"^[A-Za-z0-9]{1,4}$", description="Verdict code for a pass in RES.")
    fail_code: str = Field("F", pattern=r"^[A-Za-z0-9]{1,4}$", validate_default=True,
                           description="Verdict code for a fail in RES; must differ from pass_code.")
    checksum_required: bool = Field(False, description="Reject (NAK) PLC telegrams without a *HH checksum.")

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("Input should be 1, 1.5 or 2")
        return v

    @field_validator("fail_code")
    @classmethod
    def _fail_code_differs(cls, v: str, info: ValidationInfo) -> str:
        # A field validator (not only the model validator below) so that the error names
        # plc.fail_code and its value; pass_code is declared first, so it is in info.data when valid,
        # and validate_default=True makes this run when only pass_code was set to the default "F".
        if info.data.get("pass_code") == v:
            raise ValueError(f"Input should differ from plc.pass_code ({json.dumps(v)}), "
                             "or the PLC cannot tell a pass from a fail")
        return v

    @model_validator(mode="after")
    def _codes_differ(self) -> PlcSettings:
        # Still needed for assignment (validate_assignment=True): setting pass_code to the fail code.
        if self.pass_code == self.fail_code:
            raise ValueError(f"pass_code and fail_code must differ (both {json.dumps(self.pass_code)})")
        return self


class ZmqSettings(_Section):
    enabled: bool = Field(True, description="Publish results over ZeroMQ.")
    endpoint: str = Field("tcp://127.0.0.1:5556", pattern=ZMQ_ENDPOINT_PATTERN,
                          description="PUB socket bind address (tcp://HOST:PORT, ipc://PATH, …).")
    send_hwm: int = Field(1000, gt=0, description="Messages queued per subscriber before ZeroMQ drops (counted).")
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of reject frames on the 'reject' topic "
                              "(equal to archive.jpeg_quality: each reject frame is encoded once for both).")
    status_interval_ms: float = Field(1000.0, gt=0, le=MAX_MS, description="Period of the 'status' topic (station health) in ms (finite, > 0 and <= 3 600 000 ms = 1 h).")


class ArchiveSettings(_Section):
    enabled: bool = Field(True, description="Write reject frames and records to disk.")
    path: str = Field("./edgeqc-archive", description="Archive folder.")
    image_format: Literal["jpg", "png"] = Field("jpg", description="Frame file format.")
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of archived frames.")
    pass_sample_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of passes also archived (0 = rejects only).")
    max_bytes: int = Field(2_000_000_000, gt=0, description="Retention: total bytes kept; oldest go first.")
    max_age_days: float = Field(30.0, gt=0, le=MAX_DAYS, description="Retention: records older than this are deleted, in days (> 0 and <= 36 500).")
    queue_size: int = Field(256, gt=0, description="Frames waiting to be written; beyond this they are dropped and counted.")
    queue_max_bytes: int = Field(
        268_435_456, gt=0,
        description="Bound on the uncompressed frame bytes waiting to be written, in bytes (default 256 MiB); beyond it frames are dropped and counted.",
    )


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics.")
    host: str = Field("127.0.0.1", pattern=HOST_PATTERN, description="Bind address of the /metrics endpoint.")
    port: int = Field(9108, ge=0, le=65535, description="TCP port of the /metrics endpoint (0 = any free port).")


class ReviewSettings(_Section):
    host: str = Field("127.0.0.1", pattern=HOST_PATTERN, description="Bind address of the operator review page.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the review page.")
    stations: list[str] = Field(["tcp://127.0.0.1:5556"], description="ZeroMQ PUB endpoints of the stations to follow.")
    db_path: str = Field("./edgeqc-review.sqlite", description="SQLite file with the operator verdicts.")
    token: str | None = Field(None, description="Login token; required when host is not loopback.")
    shift_starts: list[str] = Field(
        ["06:00", "14:00", "22:00"],
        description="Local times (HH:MM) at which shifts start; the page's shift counts begin at the latest one.",
    )
    keep_unreviewed_days: float = Field(
        14.0, gt=0, le=MAX_DAYS,
        description="Rejects without a verdict older than this are deleted with their frames, in days (> 0 and <= 36 500; reviewed ones stay)."
    )

    @field_validator("shift_starts")
    @classmethod
    def _hhmm(cls, v: list[str]) -> list[str]:
        import re

        bad = [s for s in v if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", s)]
        if bad or not v:
            raise ValueError(f"expected a non-empty list of HH:MM times (24 h), got {bad or v}")
        return sorted(v)


class Settings(BaseSettings):
    """Root of the settings tree. Each field's description gives its meaning, unit and default
    (``edgeqc config show`` prints every default)."""

    model_config = SettingsConfigDict(env_prefix="EDGEQC_", env_nested_delimiter="__", extra="forbid")

    station_id: str = Field("station-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name of this inspection station in messages and metrics.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    camera: CameraSettings = Field(default_factory=CameraSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    plc: PlcSettings = Field(default_factory=PlcSettings)
    zmq: ZmqSettings = Field(default_factory=ZmqSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @field_validator("station_id")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TOML_FILE
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


_TOML_FILE: Path | None = None


class ConfigError(ValueError):
    """A configuration value is wrong; the message names field path, value and expectation."""


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed where ``loc`` (a pydantic error location) points: top-level keys
    for ``("camra",)``, the plc section's for ``("plc", "baudrat")``; [] when unknown."""
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            shown = str(value)  # inf / -inf / nan, as TOML writes them (json.dumps would say Infinity)
        else:
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{…}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = e["msg"]
        if e["type"] == "value_error":
            # A ValueError from one of our validators: pydantic prefixes "Value error, "; drop it so
            # the line reads like pydantic's own field errors ("Input should be ...").
            msg = msg.removeprefix("Value error, ")
        elif e["type"] == "extra_forbidden" and (known := _known_keys(tuple(e["loc"]))):
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            msg = (f"unknown {'field' if len(e['loc']) > 1 else 'section or field'}"
                   + (f" (did you mean {close[0]!r}?)" if close else "") + f"; expected one of {', '.join(known)}")
        lines.append(f"  {path} = {shown}: {msg}")
    return "\n".join(lines)


def _check_env_names(keys: list[str]) -> None:
    """pydantic-settings silently ignores ``EDGEQC_*`` variables whose section does not exist
    (``EDGEQC_PCL__PORT``); a typo there would leave a line on the wrong port, so refuse it."""
    fields = Settings.model_fields
    bad = []
    for k in keys:
        head = k[len("EDGEQC_"):].split("__", 1)[0].lower()
        if head not in fields:
            bad.append(k)
    if bad:
        raise ConfigError(
            f"unknown environment variable(s) {', '.join(bad)}: expected EDGEQC_<FIELD> or EDGEQC_<SECTION>__<FIELD> "
            f"with a section among {', '.join(n for n, f in fields.items() if isinstance(f.default_factory, type))}"
        )


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load the settings tree from an optional TOML file, ``EDGEQC_…`` env vars and overrides.

    Raises:
        ConfigError: the file is missing or not TOML, or a field is invalid (message lists
            ``field.path = value: expectation`` for every error).
    """
    global _TOML_FILE
    env_keys = sorted(k for k in os.environ if k.upper().startswith("EDGEQC_"))
    origin = (str(path) if path else "defaults") + (" + EDGEQC_* environment" if env_keys else "")
    _check_env_names(env_keys)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        _TOML_FILE = p
    else:
        _TOML_FILE = None
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    finally:
        _TOML_FILE = None


def settings_to_toml(settings: Settings) -> str:
    """Render the effective settings as TOML (for ``edgeqc config show``)."""
    data = settings.model_dump(mode="json")
    out: list[str] = []

    def fmt(v: Any) -> str:
        if v is None:
            return '"" # unset'
        return json.dumps(v)

    for k, v in data.items():
        if not isinstance(v, dict):
            out.append(f"{k} = {fmt(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"\n[{k}]")
            for kk, vv in v.items():
                if vv is None:
                    out.append(f"# {kk} = (unset)")
                elif isinstance(vv, dict):
                    inner = ", ".join(f"{json.dumps(a)} = {json.dumps(b)}" for a, b in vv.items())
                    out.append(f"{kk} = {{{inner}}}")
                else:
                    out.append(f"{kk} = {fmt(vv)}")
    return "\n".join(out) + "\n"
