"""1. What a study is: the spec (``schema``), read and checked from YAML (``loading``), each
arm's trainer config and role (``arms``), its search space as Optuna sees it (``space``), how a
finished study may grow (``growth``) and its tiny ``--smoke`` form (``smoke``).

The route of a study: ``spec`` -> ``stages`` (Ray Tune runs it) -> ``records`` (Ray's records,
read) -> ``tables`` (Parquet) -> ``reports`` (the HTML report).
"""
