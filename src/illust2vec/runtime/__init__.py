"""Running graphs: ONNX Runtime sessions and devices, the one batch runner, background threads."""
