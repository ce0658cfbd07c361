"""3. The records of a study: its folder (``folder``), Ray's records read (``trials``), the
trial-row contract (``rows``), the confirm plan (``plan``), the trials Tune gave up on
(``outcomes``) and the Optuna database derived from Ray's records (``optuna_db``)."""
