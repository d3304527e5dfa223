"""Inference with trained runs: `nnlab predict` (`predict`: images; `submission`: Kaggle submissions
from drawings, read row by row by `drawing_rows`), ensembles, sample grids, the doodle model behind the
web demo (`doodle`) and ONNX export (`export`)."""
