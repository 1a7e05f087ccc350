"""Prefect flows and the ``sphere`` CLI.

Importing this package applies SPHERE's offline-safe Prefect defaults (environment
variables only, user settings win) before any flow module imports prefect.
"""

from flows import prefect_env as _prefect_env  # noqa: F401
