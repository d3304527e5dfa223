"""The packed stroke store: its format (`format.StrokeStore`), how it is built from files
(`prepare.prepare`) and written back out (`export.export`), its key_id splits and sample grids.

Torch-free: `nnlab data prepare`, `info` and `export` run without torch.
"""
