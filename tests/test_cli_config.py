"""`edgeqc config check|show` and the settings tree's error messages (real CLI in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.settings import ConfigError, load_settings


def _edgeqc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], check=False, capture_output=True, text=True, env=e,
                          timeout=60)


def test_check_names_field_value_and_expectation(tmp_path: Path) -> None:
    f = tmp_path / "line3.toml"
    f.write_text('[plc]\nbaudrate = -5\nparity = "X"\n[camera]\nsorce = "0"\n[decision]\nmin_pass_probability = 1.5\n')
    r = _edgeqc("config", "check", str(f))
    assert r.returncode == 2
    assert "plc.baudrate = -5: Input should be greater than 0" in r.stderr
    assert "plc.parity = \"X\": Input should be 'N', 'E', 'O', 'M' or 'S'" in r.stderr
    assert ("camera.sorce = \"0\": unknown field (did you mean 'source'?); expected one of source, width, "
            in r.stderr)
    assert "decision.min_pass_probability = 1.5: Input should be less than or equal to 1" in r.stderr


def test_check_ok_and_not_toml(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('station_id = "line3"\n[plc]\nport = "/dev/ttyUSB0"\n')
    assert _edgeqc("config", "check", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[plc\nport=")
    r = _edgeqc("config", "check", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = _edgeqc("config", "check", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_env_overrides_file_and_show_prints_effective(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[plc]\ndeadline_ms = 300\nbaudrate = 9600\n")
    r = _edgeqc("config", "show", "--config", str(f), env={"EDGEQC_PLC__BAUDRATE": "57600"})
    assert r.returncode == 0, r.stderr
    assert "baudrate = 57600" in r.stdout and "deadline_ms = 300.0" in r.stdout


def test_bad_env_value_names_the_field() -> None:
    os.environ["EDGEQC_PLC__DEADLINE_MS"] = "soon"
    try:
        with pytest.raises(ConfigError, match=r"plc.deadline_ms = \"soon\""):
            load_settings()
    finally:
        del os.environ["EDGEQC_PLC__DEADLINE_MS"]


def test_pass_and_fail_codes_must_differ() -> None:
    with pytest.raises(ConfigError, match=re.escape('plc.fail_code = "X": Input should differ from plc.pass_code ("X")')):
        load_settings(plc={"pass_code": "X", "fail_code": "X"})
    with pytest.raises(ConfigError, match=re.escape('plc.fail_code = "F": Input should differ from plc.pass_code ("F")')):
        load_settings(plc={"pass_code": "F"})  # fail_code left at its default "F"
    assert load_settings(plc={"pass_code": "F", "fail_code": "P"}).plc.fail_code == "P"


def test_equal_codes_and_bad_stopbits_name_field_value_and_expectation(tmp_path: Path) -> None:
    f = tmp_path / "line3.toml"
    f.write_text('[plc]\npass_code = "F"\nfail_code = "F"\nstopbits = 3\n')
    r = _edgeqc("config", "check", str(f))
    assert r.returncode == 2
    assert ('plc.fail_code = "F": Input should differ from plc.pass_code ("F"), '
            "or the PLC cannot tell a pass from a fail") in r.stderr
    assert "plc.stopbits = 3: Input should be 1, 1.5 or 2\n" in r.stderr
    assert "Value error" not in r.stderr and "plc = {" not in r.stderr


def test_values_that_would_crash_later_are_refused_at_check(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[camera]\nreconnect_backoff_ms = []\n[zmq]\nendpoint = "garbage"\n[model]\nstd = [0, 1, 1]\n'
                 'input_size = [0, -1]\n[decision]\nclass_min_probability = {crack = -1}\n[plc]\nport = ""\n')
    r = _edgeqc("config", "check", str(f))
    assert r.returncode == 2
    for field in ("camera.reconnect_backoff_ms = []", "zmq.endpoint = \"garbage\"", "model.std = [0, 1, 1]",
                  "model.input_size = [0, -1]", "decision.class_min_probability.crack = -1", "plc.port = \"\""):
        assert field in r.stderr, field


def test_integer_camera_index_is_accepted() -> None:
    assert load_settings(camera={"source": 0}).camera.source == "0"


def test_env_section_typo_is_refused() -> None:
    r = _edgeqc("config", "show", env={"EDGEQC_PCL__PORT": "/dev/ttyUSB0"})
    assert r.returncode == 2 and "EDGEQC_PCL__PORT" in r.stderr


def test_pass_class_not_in_model_labels_is_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[decision]\npass_classes = ["good"]\n[plc]\nenabled = false\n[zmq]\nenabled = false\n'
                 '[metrics]\nenabled = false\n[archive]\nenabled = false\n')
    r = _edgeqc("demo", "--config", str(f))
    assert r.returncode == 2
    assert "decision.pass_classes = ['good']" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("field", ["plc.deadline_ms", "plc.heartbeat_interval_ms", "zmq.status_interval_ms"])
def test_non_finite_or_huge_times_are_refused(field: str) -> None:
    section, name = field.split(".")
    for value, why in ((float("inf"), "a finite number"), (float("nan"), "a finite number"),
                       (1e300, "less than or equal to 3600000")):
        with pytest.raises(ConfigError, match=re.escape(f"{field} = {value}: Input should be {why}")):
            load_settings(**{section: {name: value}})
    assert getattr(getattr(load_settings(), section), name) == {"deadline_ms": 250.0}.get(name, 1000.0)


def test_config_check_prints_toml_inf_nan(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[plc]\ndeadline_ms = inf\nheartbeat_interval_ms = nan\n[zmq]\nstatus_interval_ms = 1e300\n"
                 "[camera]\nfps = inf\n[archive]\nmax_age_days = -inf\n")
    r = _edgeqc("config", "check", str(f))
    assert r.returncode == 2
    for line in ("plc.deadline_ms = inf: Input should be a finite number",
                 "plc.heartbeat_interval_ms = nan: Input should be a finite number",
                 "zmq.status_interval_ms = 1e+300: Input should be less than or equal to 3600000",
                 "camera.fps = inf: Input should be a finite number",
                 "archive.max_age_days = -inf: Input should be a finite number"):
        assert line in r.stderr, line


@pytest.mark.parametrize("body, field", [
    ("[archive]\njpeg_quality = true\n", "archive.jpeg_quality = true"),
    ("[plc]\nbaudrate = false\n", "plc.baudrate = false"),
    ("[camera]\nreconnect_backoff_ms = [250, true]\n", "camera.reconnect_backoff_ms = [250, true]"),
])
def test_true_false_is_not_a_number(tmp_path: Path, body: str, field: str) -> None:
    """pydantic's lax mode would read TOML true/false as 1/0 (quality 1, 1 baud): refused, named."""
    from edge.settings import ConfigError, load_settings

    cfg = tmp_path / "line.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert f"{field}: expected a number, got true/false" in str(exc.value)
    cfg.write_text("[camera]\nloop = true\n")  # a real bool field still takes true
    assert load_settings(cfg).camera.loop is True


def test_section_typo_suggests_the_section(tmp_path: Path) -> None:
    from edge.settings import ConfigError, load_settings

    cfg = tmp_path / "line.toml"
    cfg.write_text('[camra]\nsource = "0"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert ("camra = {…}: unknown section or field (did you mean 'camera'?); expected one of station_id, "
            "log_level, camera, model," in str(exc.value))
