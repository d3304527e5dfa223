"""Trained models outside training: the backend protocol (`backends`), doodle models (`doodle`), image
models (`image`) and ONNX export (`export`)."""
