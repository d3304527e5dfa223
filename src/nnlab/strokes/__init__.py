"""Drawings in NumPy, no torch: the drawing and its packed batch (`drawing`), the class vocabulary,
Google's simplification, the numba renderer (`render`), stroke augmentation and synthetic doodles."""
