"""Reports: the run's ``summary.md`` (``report``), shared Markdown pieces (``markdown``), PNG plots
(``plots``), tables comparing runs and README blocks (``tables``), the TF-IDF baseline (``baselines``)."""
