"""Inference with trained runs, by topic:

    models/   a model that answers batches (`backends`: torch or onnxruntime), the doodle model behind the
              web demo (`doodle`), image classifiers and embedding models (`image`), ONNX export (`export`)
    kaggle/   Kaggle submissions from drawings (`submission`, rows read by `drawing_rows`), balanced
              first choices (`balance`), ensembles of runs (`ensemble`)
    faces/    embeddings files (`embed`), galleries of enrolled people (`gallery`), nearest neighbours (`search`)
    predict   `nnlab predict`: images -> a probability CSV, drawings -> a submission
    samples   sample grids of a run's validation examples with its guesses
"""
