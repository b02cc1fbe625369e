"""vqbench experiments: run configuration, metrics, training loops and the CLI.

Submodules are imported on use (``benchmark.config``, ``benchmark.metrics``, ``benchmark.train``,
``benchmark.run``) so that importing the package stays cheap and free of torch/faiss imports.
"""
