"""Storage: keys (``keys.py``), the Parquet artifact store (``artifacts.py`` on top of
``artifact_checks.py`` and ``shard_records.py``) and the SQL metadata store (``models.py``
tables, ``db.py`` engines + migrations, ``repo.py`` + ``repo_results.py`` the only places with
SQL, ``sql_values.py`` their shared tables and conversions).

Import the submodule you need; this package imports nothing heavy by itself.
"""
