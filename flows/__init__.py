"""Prefect flows and the ``sphere`` CLI.

Importing this package has no side effects; a process that runs flows calls
``flows.prefect_env.configure_prefect_env`` before importing prefect (the CLI does).
"""
