"""Engine builder with TensorRT faked (tests/fake_trt_builder.py): strongly typed network, all
parser errors reported, workspace, profile, timing cache, DLA, FP16 on 10.x vs 11.x, sidecar
contents, the runtime's compatibility messages, and atomic writes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import onnx
import pytest
from fake_trt_builder import make_fake_tensorrt
from onnx import helper
from qdq_models import make_convnet

from edge.backends.engine_sidecar import check_engine_compat, read_sidecar, sidecar_path
from edge.model_spec import resolve_spec
from trt_build import engine_step, sidecar
from trt_build.builder import BuildOptions, EngineBuildError, OnnxParseError, TensorRTMissing, build_plan
from trt_build.engine_step import build_engine

GPU = ("Orin (nvgpu)", (8, 7))


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    trt = make_fake_tensorrt("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_step, "query_gpu", lambda device=0: GPU)
    return trt


@pytest.fixture()
def convnet(tmp_path: Path) -> Path:
    return make_convnet(tmp_path / "model" / "net.onnx")


def _plan(path: Path) -> dict:
    return json.loads(path.read_bytes())


def test_int8_build_is_strongly_typed_with_profile_and_workspace(fake_trt, convnet: Path, tmp_path: Path) -> None:
    spec = resolve_spec(convnet)
    res = build_engine(convnet, tmp_path / "out" / "net.engine", spec,
                       BuildOptions("int8", workspace_mib=256, opt_batch=2, max_batch=4), calib_sha256="c" * 64,
                       quantization={"excluded_nodes": ["fc"]})
    plan = _plan(res.path)
    assert plan["network_flags"] == 1 << 1  # 1 << STRONGLY_TYPED
    assert plan["flags"] == [] and plan["pools"] == {"WORKSPACE": 256 << 20}
    assert plan["profiles"] == [{"input": [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]}]
    side = read_sidecar(res.path)
    assert res.sidecar_path == sidecar_path(res.path) == tmp_path / "out" / "net.engine.json"
    from calibration.cache import file_mode

    # not mkstemp's 0600: the service user must be able to read the engine
    assert (res.path.stat().st_mode & 0o777) == (res.sidecar_path.stat().st_mode & 0o777) == file_mode()
    assert side["trt_version"] == "10.3.0.30" and side["device_name"] == GPU[0]
    assert side["compute_capability"] == [8, 7] and side["precision"] == "int8"
    assert side["inputs"] == [{"name": "input", "shape": [-1, 3, 16, 16], "dtype": "float32"}]
    assert side["outputs"] == [{"name": "logits", "shape": [-1, 3], "dtype": "float32"}]
    assert side["model_spec"]["labels"] == ["good", "scratch", "dent"]
    assert side["plan_sha256"] == hashlib.sha256(res.path.read_bytes()).hexdigest()
    assert side["onnx_sha256"] == hashlib.sha256(convnet.read_bytes()).hexdigest()
    assert side["calib_sha256"] == "c" * 64
    assert side["build"]["settings"]["strongly_typed"] is True
    assert side["build"]["profile"] == [{"name": "input", "min": [1, 3, 16, 16], "opt": [2, 3, 16, 16],
                                         "max": [4, 3, 16, 16]}]
    assert side["build"]["quantization"] == {"excluded_nodes": ["fc"]}
    # the runtime's check accepts it on the same TensorRT and GPU ...
    sha = hashlib.sha256(res.path.read_bytes()).hexdigest()
    assert check_engine_compat(side, plan_sha256=sha, trt_version="10.3.0.30", compute_capability=(8, 7)) == []
    # ... and names each mismatch
    problems = check_engine_compat(side, plan_sha256="0" * 64, trt_version="10.3.0.31", compute_capability=(8, 6),
                                   device_name="Jetson Xavier")
    assert problems == [
        "TensorRT version mismatch: engine built with TensorRT 10.3.0.30, this device runs TensorRT 10.3.0.31",
        "GPU compute capability mismatch: engine built for 8.7 (Orin (nvgpu)), this device is 8.6 (Jetson Xavier)",
        (f"plan sha256 mismatch: sidecar records {sha[:16]}…, the plan file hashes to {'0' * 16}… (plan replaced "
        "or corrupted, or sidecar of another engine)"),
    ]


def test_fixed_batch_model_gets_no_profile(fake_trt, tmp_path: Path) -> None:
    m = make_convnet(tmp_path / "m" / "b1.onnx", batch=1)
    built = build_plan(m, BuildOptions("fp32"))
    assert _plan_bytes(built.plan)["profiles"] == [] and built.profile == ()
    assert built.inputs[0].shape == (1, 3, 16, 16)


def _plan_bytes(b: bytes) -> dict:
    return json.loads(b)


def test_every_parser_error_is_reported(fake_trt, convnet: Path, tmp_path: Path) -> None:
    m = onnx.load(str(convnet))
    m.graph.node[1].op_type = "BogusOp"
    m.graph.node[4].op_type = "AnotherBogusOp"
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(OnnxParseError) as e:
        build_plan(bad, BuildOptions())
    msg = str(e.value)
    assert f"TensorRT's ONNX parser rejected {bad} (2 error(s)):" in msg
    assert "relu1 (BogusOp): UNSUPPORTED_NODE: No importer registered for op: BogusOp" in msg
    assert "gap (AnotherBogusOp): UNSUPPORTED_NODE: No importer registered for op: AnotherBogusOp" in msg


def test_fp16_uses_the_flag_on_10x_and_is_refused_on_11(monkeypatch: pytest.MonkeyPatch, convnet: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.30"))
    plan = _plan_bytes(build_plan(convnet, BuildOptions("fp16")).plan)
    assert plan["network_flags"] == 0 and plan["flags"] == ["FP16"]
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.4.0.106"))
    with pytest.raises(EngineBuildError, match=r"TensorRT 11.4.0.106 has no BuilderFlag.FP16"):
        build_plan(convnet, BuildOptions("fp16"))
    plan = _plan_bytes(build_plan(convnet, BuildOptions("int8")).plan)  # same code on 11: strongly typed
    assert plan["network_flags"] == 2


def test_dla_core_with_gpu_fallback(monkeypatch: pytest.MonkeyPatch, convnet: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(dla_cores=2))
    plan = _plan_bytes(build_plan(convnet, BuildOptions(dla_core=1, builder_optimization_level=5)).plan)
    assert plan["device"] == "DLA" and plan["dla_core"] == 1 and "GPU_FALLBACK" in plan["flags"]
    assert plan["opt_level"] == 5
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(dla_cores=0))
    with pytest.raises(EngineBuildError, match=r"DLA core 0 requested, this device has 0 DLA core\(s\)"):
        build_plan(convnet, BuildOptions(dla_core=0))


def test_timing_cache_is_reused_and_updated(fake_trt, convnet: Path, tmp_path: Path) -> None:
    cache = tmp_path / "tc" / "orin.timing.cache"
    build_plan(convnet, BuildOptions(timing_cache=cache))
    assert fake_trt.state["timing_cache_in"] == [b""] and cache.read_bytes() == b"TCACHE1"
    build_plan(convnet, BuildOptions(timing_cache=cache))
    assert fake_trt.state["timing_cache_in"] == [b"", b"TCACHE1"] and cache.read_bytes() == b"TCACHE2"


def test_failed_build_leaves_previous_engine_intact(monkeypatch: pytest.MonkeyPatch, fake_trt, convnet: Path,
                                                    tmp_path: Path) -> None:
    spec = resolve_spec(convnet)
    engine = tmp_path / "net.engine"
    build_engine(convnet, engine, spec, BuildOptions())
    good_plan, good_side = engine.read_bytes(), sidecar_path(engine).read_bytes()

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(fail_build=True))
    with pytest.raises(EngineBuildError, match="TensorRT could not build the engine:\n  fake: out of workspace"):
        build_engine(convnet, engine, spec, BuildOptions())
    assert engine.read_bytes() == good_plan and sidecar_path(engine).read_bytes() == good_side

    # a write that fails half way (disk full while staging the sidecar): nothing replaced, no temp left
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())
    real_stage = sidecar._stage
    calls: list[str] = []

    def failing_stage(folder: Path, name: str, data: bytes) -> str:
        calls.append(name)
        if name.endswith(".json"):
            raise OSError(28, "No space left on device")
        return real_stage(folder, name, data)

    monkeypatch.setattr(sidecar, "_stage", failing_stage)
    with pytest.raises(OSError, match="No space left"):
        build_engine(convnet, engine, spec, BuildOptions(workspace_mib=64))
    assert calls == ["net.engine", "net.engine.json"]
    assert engine.read_bytes() == good_plan and sidecar_path(engine).read_bytes() == good_side
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_sidecar_must_describe_the_plan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match the plan"):
        sidecar.write_engine(tmp_path / "x.engine", b"plan", {"plan_sha256": "0" * 64})
    assert not (tmp_path / "x.engine").exists()


def test_without_tensorrt_the_builder_says_so(monkeypatch: pytest.MonkeyPatch, convnet: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(TensorRTMissing, match="TensorRT is not installed here"):
        build_plan(convnet, BuildOptions())


def test_unknown_parser_input_dims_raise_profile_error(fake_trt, tmp_path: Path) -> None:
    from trt_build.profile import ProfileError

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", "T"])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", "T"])])
    p = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    with pytest.raises(ProfileError, match=r"input 'x' \[N,T\]: axis 1 \('T'\) is dynamic"):
        build_plan(p, BuildOptions())
