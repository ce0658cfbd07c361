"""4. The tables: Ray's records -> Parquet (``export``), rebuilt while a study runs with its
status and the report (``live``)."""
