"""Analysis of a sweep store: from `hxt.sqlite` to report.md, report.html and PNG figures.

Reads the store only (plain SQL, read-only); never imports torch or the models, never trains.

    load      the store into pandas (runs, metrics, evals), with clear errors for bad stores
    metrics   pooled in-/out-of-range accuracies, horizons, Wilson intervals, best-over-LR selection
    fits      size-to-solve logistic and loss power law, with bootstrap CIs over seeds
    verdict   does a hybrid beat the best of its parts at matched size, with a bootstrap CI
    tables    runs all of the above for a store and builds the tables the report prints
    plots     heatmap, training, generalisation, size-to-solve and scaling figures (Agg, no pyplot)
    report    `write_report(sweep_dir, out)`, behind `hxt report`
"""
