"""The one user-facing error family.

Everything a user can cause (bad config, bad input file, missing model, no pairs to
train on, ...) raises a ``SphereError`` subclass. The CLI turns these into a single
line on stderr and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SphereError(Exception):
    """Base class of every error a user is meant to read."""

    exit_code: int = 1


class ConfigError(SphereError):
    """Unknown key, bad value or unreadable config file."""

    exit_code = 2


class InputDataError(SphereError):
    """A question/benchmark file that cannot be read at all (single bad rows are rejected, not raised)."""


class ModelLoadError(SphereError):
    """A model path that does not exist or cannot be loaded."""


class BackendError(SphereError):
    """A generator/PRM/ORM backend that failed or is unknown."""


class GenerationError(BackendError):
    """Generation failed for a batch (timeout, server error, unparsable output)."""


class GradingError(SphereError):
    """Answer extraction or verification could not run."""


class ArtifactError(SphereError):
    """A missing, corrupt or inconsistent artifact."""


class StoreError(SphereError):
    """The metadata database is unreachable or not migrated."""


class TrainingError(SphereError):
    """DPO training cannot start or failed (no pairs, too few for an eval split, ...)."""


class EvaluationError(SphereError):
    """Evaluation cannot run (unknown benchmark, missing model, ...)."""


class RunNotFoundError(SphereError):
    """A run id that has no record and no artifacts."""
