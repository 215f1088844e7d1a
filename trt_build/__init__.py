"""TensorRT engine build (``edgeqc build`` / ``edgeqc info``): profile choice, builder steps,
plan + sidecar written atomically. ``tensorrt`` is imported lazily (see docs/build.md)."""
