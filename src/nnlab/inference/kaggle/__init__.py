"""Kaggle submissions from drawings: rows of a test file (`drawing_rows`), the submission (`submission`),
balanced first choices (`balance`) and ensembles of runs (`ensemble`)."""
