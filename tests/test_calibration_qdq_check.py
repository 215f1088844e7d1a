"""Q/DQ graph checks: valid ONNX Runtime- and ModelOpt-style graphs pass; each broken rule is an
error that names the offending node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.qdq_check import QdqGraphError, check_qdq_model, require_valid_qdq

OUT_CH = 4


def _graph(*, zp_value: int = 0, zp_dtype=np.int8, weight_scales: int = OUT_CH, axis: int = 0,
           modelopt: bool = False, int32_bias: bool = False, no_zero_point: bool = False) -> onnx.ModelProto:
    """input -> Q -> DQ -> Conv(weight behind DQ) -> output, with one rule optionally broken."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (OUT_CH, 3, 3, 3)).astype(np.float32)
    scales = np.full(weight_scales, 0.02, np.float32) if weight_scales > 1 else np.array(0.02, np.float32)
    wzp = np.zeros(weight_scales, np.int8) if weight_scales > 1 else np.array(0, np.int8)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(zp_value, zp_dtype), "x_zp"),
             numpy_helper.from_array(scales, "w_scale"), numpy_helper.from_array(wzp, "w_zp")]
    x_q_inputs = ["input", "x_scale"] if no_zero_point else ["input", "x_scale", "x_zp"]
    nodes = [helper.make_node("QuantizeLinear", x_q_inputs, ["xq"], name="input_Q"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="input_DQ")]
    if modelopt:
        inits.append(numpy_helper.from_array(w, "w_float"))
        nodes += [helper.make_node("QuantizeLinear", ["w_float", "w_scale", "w_zp"], ["wq"], name="w_Q", axis=axis),
                  helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wdq"], name="w_DQ", axis=axis)]
    else:
        wi = np.clip(np.round(w / 0.02), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(wi, "w_int8"))
        nodes.append(helper.make_node("DequantizeLinear", ["w_int8", "w_scale", "w_zp"], ["wdq"], name="w_DQ",
                                      axis=axis))
    conv_inputs = ["xdq", "wdq"]
    if int32_bias:
        inits += [numpy_helper.from_array(np.zeros(OUT_CH, np.int32), "b_int32"),
                  numpy_helper.from_array(np.full(OUT_CH, 0.001, np.float32), "b_scale"),
                  numpy_helper.from_array(np.zeros(OUT_CH, np.int32), "b_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_int32", "b_scale", "b_zp"], ["bdq"], name="bias_DQ",
                                      axis=0))
        conv_inputs.append("bdq")
    else:
        inits.append(numpy_helper.from_array(np.zeros(OUT_CH, np.float32), "b"))
        conv_inputs.append("b")
    nodes.append(helper.make_node("Conv", conv_inputs, ["output"], name="conv", pads=[1, 1, 1, 1]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, OUT_CH, 8, 8])],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_onnxruntime_style_graph_passes() -> None:
    s = require_valid_qdq(_graph())
    assert (s.quantize_nodes, s.dequantize_nodes, s.weights_checked) == (1, 2, 1)
    assert s.ok


def test_modelopt_style_float_weight_behind_q_dq_passes() -> None:
    s = require_valid_qdq(_graph(modelopt=True))
    assert (s.quantize_nodes, s.dequantize_nodes, s.weights_checked) == (2, 2, 1)


def test_nonzero_zero_point_names_node() -> None:
    with pytest.raises(QdqGraphError, match=r"input_Q: zero point 'x_zp' is not 0") as e:
        require_valid_qdq(_graph(zp_value=3), "bad.onnx")
    assert "input_DQ" in str(e.value) and str(e.value).startswith("bad.onnx: 2 Q/DQ rule violation(s)")


def test_uint8_zero_point_is_a_violation() -> None:
    v = check_qdq_model(_graph(zp_dtype=np.uint8)).violations
    assert [x.node for x in v] == ["input_Q", "input_DQ"]
    assert all("expected int8" in x.problem for x in v)


def test_missing_zero_point_is_a_violation() -> None:
    v = check_qdq_model(_graph(no_zero_point=True)).violations
    assert [x.node for x in v] == ["input_Q"] and "no zero point" in v[0].problem


def test_per_tensor_weight_names_node() -> None:
    with pytest.raises(QdqGraphError, match=r"w_DQ: weight of conv is quantized per tensor \(1 scale\), expected "
                                            r"per channel: 4 scales on axis 0"):
        require_valid_qdq(_graph(weight_scales=1))


def test_wrong_channel_axis_names_node() -> None:
    v = check_qdq_model(_graph(weight_scales=3, axis=1)).violations
    assert [x.node for x in v] == ["w_DQ"]
    assert v[0].problem == "weight of conv has 3 scales on axis 1, expected 4 on the output-channel axis 0"


def test_int32_bias_dequantize_names_node() -> None:
    with pytest.raises(QdqGraphError, match=r"bias_DQ: dequantizes int32 tensor 'b_int32' \(a quantized bias\)"):
        require_valid_qdq(_graph(int32_bias=True))


def test_graph_without_qdq_is_not_int8(tmp_path: Path) -> None:
    from qdq_models import make_convnet

    p = make_convnet(tmp_path / "m.onnx")
    with pytest.raises(QdqGraphError, match="no QuantizeLinear/DequantizeLinear nodes"):
        require_valid_qdq(p)
