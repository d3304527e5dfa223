"""Studies: a grid of variants x seeds, one run directory per cell, and an honest comparison.

    plan.plan_study(config, grid, seeds) -> Study (cells <out>/<variant>/seed<k>/, nothing run yet)
    execute.run_study(study)             -> StudyOutcome
        finished cells (metrics.json) are skipped, interrupted ones resumed from
        checkpoints/last.*, the rest trained from scratch, in parallel processes;
        a failing cell is recorded (error.txt) and the others go on
    report.write_report(study, outcomes) -> report.md, report.json, plots/accuracy.png, plots/curves.png
        per variant: metric mean +- sample std over seeds, params, train time, images/s;
        per pair: difference, Welch's t-test (scipy), Holm-adjusted p, a plain verdict.

The study only calls `nnlab.training.fit` per cell, so any experiment works: model ablations,
learning-rate sweeps, loss comparisons, the NumPy engine.

The package imports nothing itself: `studies.plan` stays torch-free, so the CLI checks a study's config,
grid and seeds before torch loads (`execute` and `report` bring it).
"""
