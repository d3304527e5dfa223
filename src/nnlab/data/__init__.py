"""Data sources: image data sets, Quick, Draw! strokes, splits."""
