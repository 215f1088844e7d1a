"""``edgeqc bench`` arguments and exits: bad arguments exit 2 before anything runs (and leave no
work folder), the JSON falls back when it cannot be written, Ctrl-C / SIGTERM end the run cleanly.

Real CLI (``edge.cli.main`` or a subprocess), tiny ONNX classifiers (tiny_models); only the
signal tests start a (``--quick``) run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tiny_models import make_classifier, write_labelled_images

from edge.cli import main

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("benchcli")
    model = make_classifier(tmp / "tiny.onnx", classes=3)
    (tmp / "labels.txt").write_text("\n".join(LABELS) + "\n")
    images = write_labelled_images(tmp / "images", LABELS, 6)
    int8 = make_classifier(tmp / "q" / "tiny-qdq.onnx", classes=3, qdq=True)
    (tmp / "q" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    corrupt = tmp / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf \xff\xfe" * 8)
    regular = tmp / "a-file.txt"
    regular.write_text("x")
    return {"tmp": tmp, "model": model, "images": images, "int8": int8, "corrupt": corrupt, "regular": regular}


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own temp folder; none may leave an edgeqc-bench-* work folder there."""
    tdir = tmp_path / "tmpdir"
    tdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tdir))
    monkeypatch.chdir(tmp_path)
    yield tdir
    assert list(tdir.glob("edgeqc-bench-*")) == []


def bench(files: dict[str, Path], *extra: str, model: str | None = None, images: bool = True) -> list[str]:
    argv = ["bench", "--model", model or str(files["model"])]
    if images:
        argv += ["--images", str(files["images"])]
    return argv + ["--quick", "--pass-class", "a", "--no-progress", "--json", str(files["tmp"] / "out.json"), *extra]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeqc bench: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("where", ["under_a_file", "a_folder", "sysfs"])
def test_unwritable_json_is_refused_before_the_run(where: str, files, tmp_path, capsys) -> None:
    target = {"under_a_file": files["regular"] / "out.json", "a_folder": tmp_path,
              "sysfs": Path("/sys/edgeqc-bench.json")}[where]
    why = {"under_a_file": f"{files['regular']} is a file, not a folder", "a_folder": "it is a folder",
           "sysfs": ""}[where]
    if where == "sysfs" and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs")
    argv = bench(files)[:-2] + ["--json", str(target)]
    err = usage_error(argv, capsys)
    assert f"--json {target}: cannot write the results there ({why}" in err
    assert not Path("/sys/edgeqc-bench.json").exists()


def test_json_target_check_leaves_no_file_but_makes_the_folders(tmp_path: Path) -> None:
    from edge.bench import check_json_target

    target = tmp_path / "new" / "deeper" / "bench.json"
    assert check_json_target(target) is None
    assert target.parent.is_dir() and not target.exists()
    target.write_text("old")
    assert check_json_target(target) is None and target.read_text() == "old"


def test_json_falls_back_to_the_current_folder_when_the_write_fails(tmp_path: Path) -> None:
    from edge.bench import write_json

    written, why = write_json({"schema": 1, "x": [1, 2]}, tmp_path / "gone" / "out.json")
    assert why is None and json.loads((tmp_path / "gone" / "out.json").read_text()) == {"schema": 1, "x": [1, 2]}
    (tmp_path / "blocker").write_text("a file")
    written, why = write_json({"schema": 1}, tmp_path / "blocker" / "out.json")
    assert why and written.parent == tmp_path and written.name.startswith("bench-")  # cwd = tmp_path
    assert json.loads(written.read_text()) == {"schema": 1}


def test_missing_int8(files, capsys) -> None:
    err = usage_error(bench(files, "--int8", str(files["tmp"] / "nope.int8.onnx")), capsys)
    assert f"--int8 {files['tmp'] / 'nope.int8.onnx'}: no such file; expected an INT8 Q/DQ ONNX model" in err


def test_corrupt_int8(files, capsys) -> None:
    err = usage_error(bench(files, "--int8", str(files["corrupt"])), capsys)
    assert f"--int8 {files['corrupt']}: not a readable ONNX model (" in err


def test_fp32_model_as_int8_is_refused(files, capsys) -> None:
    err = usage_error(bench(files, "--int8", str(files["model"])), capsys)
    assert (f"--int8 {files['model']}: expected an INT8 Q/DQ ONNX model (QuantizeLinear/DequantizeLinear nodes), "
            "this one has none (reads as fp32)") in err


def test_corrupt_model(files, capsys) -> None:
    err = usage_error(bench(files, model=str(files["corrupt"])), capsys)
    assert f"--model {files['corrupt']}: not a readable ONNX model (" in err


def test_missing_model_without_images(files, capsys) -> None:
    err = usage_error(bench(files, model=str(files["tmp"] / "missing.onnx"), images=False), capsys)
    assert f"--model {files['tmp'] / 'missing.onnx'}: no such file" in err


@pytest.mark.parametrize(("opt", "value", "unit"), [("--rate", "nan", "parts/s"), ("--rate", "inf", "parts/s"),
                                                    ("--rate", "0", "parts/s"), ("--duration", "nan", "s"),
                                                    ("--duration", "-inf", "s"), ("--duration", "-1", "s")])
def test_rate_and_duration_must_be_finite_and_positive(opt, value, unit, files, capsys) -> None:
    err = usage_error(bench(files, f"{opt}={value}"), capsys)
    assert f"{opt} {float(value)}: expected a finite number > 0 {unit}" in err


def test_negative_threads(files, capsys) -> None:
    err = usage_error(bench(files, "--threads=-1"), capsys)
    assert "--threads -1: expected 0 (auto) or 1.." in err


def test_more_threads_than_cpus(files, capsys) -> None:
    cpus = len(os.sched_getaffinity(0))
    err = usage_error(bench(files, "--threads", str(cpus + 1)), capsys)
    assert f"--threads {cpus + 1}: this machine has {cpus} usable CPUs" in err


def test_bad_pass_class_leaves_no_work_folder(files, capsys) -> None:
    err = usage_error(bench(files, "--pass-class", "zzz"), capsys)  # checked after the model is read
    assert "pass class(es) ['zzz'] are not labels of tiny.onnx" in err


def test_workdir_is_made_only_by_a_successful_setup(files, own_tempdir: Path) -> None:
    import shutil

    from edge.bench.setup import resolve_setup

    setup = resolve_setup(model=str(files["model"]), images=str(files["images"]), config=None, quick=True,
                          duration=None, rate=None, threads=1, int8=str(files["int8"]), calib=None,
                          pass_classes=["a"], cache_dir=None)
    assert setup.workdir.parent == own_tempdir and setup.workdir.is_dir()
    assert setup.settings.archive.path == str(setup.workdir / "archive")
    assert setup.int8 == files["int8"] and setup.settings.model.intra_op_threads == 1
    shutil.rmtree(setup.workdir)


@pytest.mark.parametrize(("sig", "code", "line"), [(signal.SIGTERM, 143, "edgeqc bench: terminated (SIGTERM)"),
                                                   (signal.SIGINT, 130, "edgeqc bench: interrupted")])
def test_signal_during_the_run_removes_the_work_folder(sig, code, line, files, own_tempdir, tmp_path) -> None:
    env = {**os.environ, "TMPDIR": str(own_tempdir), "PYTHONPATH": str(REPO)}
    argv = bench(files, "--duration", "30")
    argv.remove("--no-progress")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for text in proc.stderr:  # progress lines; signal once the run has started its items
            seen.append(text)
            if text.startswith("bench: item 1"):
                break
        assert list(own_tempdir.glob("edgeqc-bench-*")), seen  # the work folder exists during the run
        time.sleep(0.3)
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, rest
    assert rest.strip().splitlines()[-1] == line and "Traceback" not in rest
    assert not (files["tmp"] / "out.json").exists()


def test_shared_folder_is_found_beside_the_current_folder_first(tmp_path: Path, monkeypatch) -> None:
    """`pip install .` (the README) puts the package in site-packages: `edgeqc bench` run in a
    checkout must still find the ../shared beside it."""
    from edge import checkout_path

    (tmp_path / "shared").mkdir()
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert checkout_path("../shared") == (tmp_path / "shared").resolve()
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "deep")  # no ../shared here: the one beside this package's checkout
    assert checkout_path("../shared") == Path(__file__).resolve().parents[1].parent / "shared"
