"""params.yaml -> validated sweep (``spec``) -> code identity (``code``) -> data pins (``prepare``) -> Ray Tune (``sweep``) -> MLflow (``recorder``, ``tracking``)."""
