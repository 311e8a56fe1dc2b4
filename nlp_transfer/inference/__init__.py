"""Inference: a saved run reloaded and predicting (``predictor``: :func:`~nlp_transfer.inference.predictor.load_run`),
evaluated on labelled texts (``evaluation``), and predictions written out (``textio``)."""
