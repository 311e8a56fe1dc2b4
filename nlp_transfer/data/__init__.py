"""Data: one reader for every file format (``reader``), the offline catalog (``catalog``), loading and
splits (``loading``: :func:`~nlp_transfer.data.loading.load_data`), tokens and batches (``batching``),
long-text windows (``chunking``) and class balance (``sampling``)."""
