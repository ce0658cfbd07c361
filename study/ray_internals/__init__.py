"""The one door to Ray Tune's and Optuna's internals: every private name, the layout of Ray's
files on disk and the wording of its logs that the project relies on, and nothing else.

* ``api``: private attributes of Ray Tune's searchers and Optuna's trials and storage;
* ``snapshot``: Ray's experiment snapshot and trial folders, read, and repaired before a
  restore;
* ``logs``: filters matched on Ray's log wording;
* ``cluster``: ``ray.init`` with a node address (a private keyword).

Both libraries are pinned in ``pyproject.toml`` because of this package: upgrading Ray or
Optuna means reading these modules and ``tests/test_private_api.py``, which states each
assumption against the installed versions and fails naming it. ``tests/test_security.py``
checks that no module outside this package reads a snapshot, a private name or Ray's wording.
"""
