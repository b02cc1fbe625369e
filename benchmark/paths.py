"""Where things are: every path and file name the pipeline, the report and the tests share.

Written once here and read everywhere else; params.yaml may relocate the tracking store and the
results (``tracking.uri``, ``tracking.results_dir``), and these are their defaults.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = "params.yaml"
TRACKING_DB = "mlflow.db"  # default tracking.uri: an SQLite store beside params.yaml
RESULTS_DIR = "results"  # default tracking.results_dir: <results>/<sweep>/trials.csv
PREPARED_DIR = Path("data") / "prepared"  # <prepared>/<sweep>/manifest.json pins a sweep's data
SCALE_PARAMS_FILE = "params-scale.yaml"  # the scale ladder's profile (rungs = its sweeps), beside params.yaml
REPRODUCE_PARAMS_FILE = "params-reproduce.yaml"  # the reproduction's profile (paper-scale cells), beside params.yaml
TABLE_FILE = "trials.csv"
ARTIFACTS_DIR = "artifacts"  # <results>/<sweep>/artifacts/<trial>/: final codebook and usage
REPORTS_DIR = REPO_ROOT / "reports"
DATA_ROOT_ENV = "VQBENCH_DATA_ROOT"  # set by a sweep for its Ray workers, which run a shipped copy of the code


def _data_root() -> Path:
    """``data/`` of the checkout; in a Ray worker, the driver's (``$VQBENCH_DATA_ROOT``) where this
    node has the folder above it, so the memos below are shared with the driver's node."""
    shared = os.environ.get(DATA_ROOT_ENV)
    if shared and Path(shared).parent.is_dir():
        return Path(shared)
    return REPO_ROOT / "data"


DATA_ROOT = _data_root()
KMEANS_CACHE_DIR = DATA_ROOT / "kmeans"  # memoised k-means references (content-addressed)
MODELS_CACHE_DIR = DATA_ROOT / "models"  # memoised trained networks: transplant autoencoders, classifiers
