"""Alembic migration scripts of the metadata store, packaged so an installed SPHERE can
migrate its database (``sphere db upgrade`` or ``open_repository(upgrade=True)``)."""
