"""Files -> parsed data, without torch.

Quick, Draw! stroke files (Google ndjson simplified or raw, Kaggle CSVs, Google .bin; gzip or
not) are parsed a block at a time by numba scanners (`scan_values`, `scan_csv`, `scan_ndjson`,
`scan_bin`) into packed `chunks.ParsedChunk` arrays; `writers` writes them back out. Image data
sets (IDX, npz, folders, bitmaps, CSV feature rows) are read into an `images.ImageSource` by
`image_kinds.load_source`. Bad rows are skipped and counted by reason (`reasons`), or raise one
`DataError` naming the file and line.

Nothing here imports torch or scikit-learn: `nnlab data prepare` and its worker processes run on
these modules alone.
"""
