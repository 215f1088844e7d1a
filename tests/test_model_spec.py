"""Model spec resolution: config, Ultralytics/edgeqc metadata, labels.txt, graph, and errors."""

from __future__ import annotations

import json

import pytest
from tiny_models import make_classifier

from edge.model_spec import (
    ModelSpec,
    ModelSpecError,
    resolve_spec,
    spec_from_dict,
    spec_from_metadata,
    spec_to_dict,
    spec_to_metadata,
)
from edge.onnx_info import read_onnx_info
from edge.settings import ModelSettings

MAGNETIC = ("blowhole", "break", "crack", "fray", "free", "uneven")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIVE = ["a", "b", "c", "d", "e"]


def test_effnet_labels_txt_and_config_preprocessing(effnet_path):
    spec = resolve_spec(effnet_path, ModelSettings(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    assert spec.labels == MAGNETIC  # from labels.txt beside the model
    assert (spec.input_name, spec.output_name) == ("input", "logits")
    assert spec.input_size == (224, 224)
    assert (spec.resize, spec.interpolation, spec.channel_order) == ("stretch", "pillow_bilinear", "RGB")
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert spec.output == "logits"  # no Softmax in the graph
    assert spec.dynamic_batch is True and spec.max_batch is None


def test_effnet_defaults_without_config(effnet_path):
    spec = resolve_spec(effnet_path)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert spec.resize == "stretch" and spec.interpolation == "pillow_bilinear"


def test_yolo_from_ultralytics_metadata(yolo_path):
    spec = resolve_spec(yolo_path)
    assert spec.labels == MAGNETIC  # names dict literal
    assert (spec.input_name, spec.output_name) == ("images", "output0")
    assert spec.input_size == (224, 224)  # imgsz, since H/W are dynamic in the graph
    assert (spec.resize, spec.interpolation, spec.channel_order) == ("center_crop", "pillow_bilinear", "RGB")
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert spec.output == "probabilities"  # final Softmax node
    assert spec.dynamic_batch is True


def test_config_overrides_metadata(yolo_path):
    labels = ["b0", "b1", "b2", "b3", "ok", "b5"]
    spec = resolve_spec(yolo_path, ModelSettings(labels=labels, resize="letterbox", input_size=(160, 192),
                                                 channel_order="BGR", output="logits"))
    assert spec.labels == tuple(labels)
    assert spec.input_size == (160, 192)  # allowed: H/W dynamic in the graph
    assert (spec.resize, spec.channel_order, spec.output) == ("letterbox", "BGR", "logits")
    assert spec.interpolation == "pillow_bilinear"  # still from the Ultralytics metadata


def test_six_labels_for_five_classes(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5)
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\nf\n")
    with pytest.raises(ModelSpecError) as err:
        resolve_spec(model)
    msg = str(err.value)
    assert "labels.txt" in msg and "6 labels" in msg and "5 classes" in msg and "'logits'" in msg


def test_config_label_count_mismatch_names_config(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5)
    with pytest.raises(ModelSpecError, match=r"config \(model\.\*\) has 4 labels .* 5 classes"):
        resolve_spec(model, ModelSettings(labels=["a", "b", "c", "d"]))


def test_metadata_names_count_mismatch(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5,
                            metadata={"names": "{0: 'a', 1: 'b'}", "task": "classify", "imgsz": "[8, 8]"})
    with pytest.raises(ModelSpecError, match=r"Ultralytics\) has 2 labels .* 5 classes"):
        resolve_spec(model)


def test_no_labels_anywhere(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5)
    with pytest.raises(ModelSpecError) as err:
        resolve_spec(model)
    msg = str(err.value)
    assert "no class labels" in msg and "model.labels" in msg and "labels.txt" in msg


def test_labels_txt_skips_blank_lines(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5)
    (tmp_path / "labels.txt").write_text("a\n\nb\nc\r\nd\ne\n\n")
    assert resolve_spec(model).labels == tuple(FIVE)


def test_softmax_detection_and_config_output(tmp_path):
    probs = make_classifier(tmp_path / "p.onnx", softmax=True, output_name="prob")
    logits = make_classifier(tmp_path / "l.onnx")
    cfg = ModelSettings(labels=FIVE)
    assert resolve_spec(probs, cfg).output == "probabilities"
    assert resolve_spec(logits, cfg).output == "logits"
    assert resolve_spec(probs, ModelSettings(labels=FIVE, output="logits")).output == "logits"


def test_dynamic_hw_needs_a_size(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", height="h", width="w")
    with pytest.raises(ModelSpecError, match="dynamic height/width.*model.input_size"):
        resolve_spec(model, ModelSettings(labels=FIVE))
    assert resolve_spec(model, ModelSettings(labels=FIVE, input_size=(32, 48))).input_size == (32, 48)


def test_config_size_contradicting_fixed_graph(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", height=8, width=8)
    with pytest.raises(ModelSpecError, match=r"input_size \[8, 16\].*fixed width 8"):
        resolve_spec(model, ModelSettings(labels=FIVE, input_size=(8, 16)))


def test_fixed_batch(tmp_path):
    spec = resolve_spec(make_classifier(tmp_path / "m.onnx", batch=4), ModelSettings(labels=FIVE))
    assert spec.dynamic_batch is False and spec.max_batch == 4


def test_ultralytics_task_must_be_classify(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", metadata={"task": "detect", "names": "{0: 'a'}"})
    with pytest.raises(ModelSpecError, match="task = 'detect'.*classify"):
        resolve_spec(model)


def test_names_parsed_as_literal_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    names = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    model = make_classifier(tmp_path / "m.onnx", metadata={"names": names, "task": "classify"})
    with pytest.raises(ModelSpecError, match="not a Python literal"):
        resolve_spec(model)
    assert not marker.exists()


def test_bad_imgsz(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", metadata={"names": "['a','b','c','d','e']", "imgsz": "'big'"})
    with pytest.raises(ModelSpecError, match="imgsz"):
        resolve_spec(model)


def test_spec_dict_and_metadata_round_trip():
    spec = ModelSpec(labels=("ok", "bad"), input_name="x", output_name="y", input_size=(96, 128),
                     resize="letterbox", interpolation="area", channel_order="BGR", scale=1 / 255,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, output="probabilities", dynamic_batch=False,
                     max_batch=4)
    d = spec_to_dict(spec)
    assert spec_from_dict(json.loads(json.dumps(d))) == spec
    md = spec_to_metadata(spec)
    assert all(k.startswith("edgeqc.") and isinstance(v, str) for k, v in md.items())
    assert md["edgeqc.labels"] == '["ok", "bad"]'
    assert spec_from_metadata(md) == spec
    with pytest.raises(ModelSpecError, match="unknown \\['colour'\\]"):
        spec_from_dict({**d, "colour": 1})
    with pytest.raises(ModelSpecError, match="missing \\['labels'\\]"):
        spec_from_metadata({k: v for k, v in md.items() if k != "edgeqc.labels"})


def test_calibrated_model_carries_its_spec(tmp_path):
    # What calibration does: resolve from config + labels.txt, then write the spec into the Q/DQ model.
    src = make_classifier(tmp_path / "fp32" / "m.onnx")
    (tmp_path / "fp32" / "labels.txt").write_text("\n".join(FIVE))
    spec = resolve_spec(src, ModelSettings(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="center_crop"))
    int8 = make_classifier(tmp_path / "int8" / "m.onnx", qdq=True, metadata=spec_to_metadata(spec))
    assert read_onnx_info(int8).precision == "int8"
    assert resolve_spec(int8) == spec  # no config, no labels.txt


def test_engine_spec_from_sidecar(tmp_path):
    spec = ModelSpec(labels=tuple(FIVE), output_name="logits", input_size=(8, 8), output="logits", max_batch=8)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    sidecar = {"trt_version": "10.3.0", "compute_capability": [8, 7], "plan_sha256": "0" * 64,
               "precision": "int8", "model_spec": spec_to_dict(spec),
               "inputs": [{"name": "input", "shape": [-1, 3, 8, 8], "dtype": "float32"}],
               "outputs": [{"name": "logits", "shape": [-1, 5], "dtype": "float32"}]}
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    assert resolve_spec(engine) == spec
    over = resolve_spec(engine, ModelSettings(labels=["v", "w", "x", "y", "z"]))
    assert over.labels == ("v", "w", "x", "y", "z")
    with pytest.raises(ModelSpecError, match="6 labels .* 5 classes"):
        resolve_spec(engine, ModelSettings(labels=FIVE + ["f"]))


def test_engine_without_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelSpecError, match=r"m\.engine\.json is missing.*rebuilt on this device"):
        resolve_spec(engine)


def test_invalid_spec_values():
    with pytest.raises(ModelSpecError, match="std"):
        ModelSpec(labels=("a",), std=(1.0, 0.0, 1.0))
    with pytest.raises(ModelSpecError, match="duplicates"):
        ModelSpec(labels=("a", "a"))
    with pytest.raises(ModelSpecError, match="interpolation"):
        ModelSpec(labels=("a",), interpolation="lanczos")  # type: ignore[arg-type]


def test_not_onnx(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        resolve_spec(bad, ModelSettings(labels=FIVE))
    with pytest.raises(FileNotFoundError):
        resolve_spec(tmp_path / "missing.onnx")
