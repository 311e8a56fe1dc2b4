"""Transfer: which parameters train (``modes``), regularisers (``regularisers``: L2-SP), frozen work done
once (``caches``: pooled features; ``prefix``: the frozen lower layers of ``partial``), and the
scikit-learn probe (``probe``: the ``logreg`` head)."""
