"""Faces (any embedding model): embeddings files (`embed`), galleries and identification (`gallery`), and
nearest neighbours by cosine (`search`)."""
