"""INT8 calibration for TensorRT's explicit quantization: calibration set -> Q/DQ ONNX model,
graph checks, FP32 vs INT8 evaluation, accuracy gate, accuracy-aware layer selection
(``edgeqc calibrate`` / ``edgeqc evaluate``; see docs/build.md)."""
