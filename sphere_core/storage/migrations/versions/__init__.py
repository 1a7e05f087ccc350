"""Ordered, append-only Alembic revisions (``NNNN_<slug>.py``). Never edit a released one."""
