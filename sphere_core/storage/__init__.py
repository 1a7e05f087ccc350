"""Storage: the Parquet artifact store (``artifacts.py``) and the SQL metadata store
(``models.py`` tables, ``db.py`` engines + migrations, ``repo.py`` the only place with SQL).

Import the submodule you need; this package imports nothing heavy by itself.
"""
