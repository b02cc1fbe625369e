"""One run: configuration (``config``), training (``training``, ``fit``, ``vqvae``, ``train``), models, metrics, ``run`` CLI."""
