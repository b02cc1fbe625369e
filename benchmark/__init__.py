"""vqbench's benchmark, one layer per subpackage; data flows one way through them:

- :mod:`benchmark.experiments`: one run: its configuration, training loops, models, metrics.
- :mod:`benchmark.pipeline`: params.yaml -> sweeps of runs (Ray Tune) -> MLflow -> tables.
- :mod:`benchmark.report`: tables -> statistics, comparison tables, figures, the papers' claims.
- :mod:`benchmark.perf`: speed and memory of the hot paths against peers.

A layer imports only from layers before it (report may read the pipeline's spec, never the
reverse). One command line: ``python -m benchmark {run,prepare,sweep,report,perf,overhead} --help``.
"""
