"""Models: the classifier (``classifier``: backbone + pooling + head), checkpoints by name (``hub``,
``catalog``, ``gguf``), the plain-transformers layout (``interop``), CPU speed-ups (``fast``)."""
