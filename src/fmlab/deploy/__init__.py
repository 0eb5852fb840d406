"""A trained network put to use: prediction (infer), ONNX export and the inference benchmark."""
