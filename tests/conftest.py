"""Shared test set-up: the process settings of ``python -m benchmark`` (benchmark.runtime), applied
before any test module imports torch or faiss, so tests run the way the product does."""
from benchmark import runtime

runtime.configure()
