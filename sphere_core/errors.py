"""The one user-facing error family and the process exit codes.

Everything a user can cause (bad config, bad input file, missing model, no pairs to
train on, a run id that would leave ``$SPHERE_HOME``, ...) raises a ``SphereError``
subclass. The CLI turns these into a single line on stderr and the class's exit code; the
traceback goes to the invocation's log file. Anything else is a bug (exit 70).

Exit codes (``docs/errors.md``): 0 ok, 1 input/run failure, 2 usage/config, 3 store or
infrastructure, 70 internal error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import signal as _signal

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 128 + _signal.SIGINT  # 130
EXIT_TERMINATED = 128 + _signal.SIGTERM  # 143


class SphereError(Exception):
    """Base class of every error a user is meant to read (exit 1 unless a subclass says)."""

    exit_code: int = EXIT_FAILURE


class ConfigError(SphereError):
    """Unknown key, bad value or unreadable config file."""

    exit_code = EXIT_USAGE


class InvalidNameError(SphereError):
    """A user-given name that becomes a path (run id, model label, ...) is not a safe name."""

    exit_code = EXIT_USAGE


class InputDataError(SphereError):
    """A question/benchmark file that cannot be read at all (single bad rows are rejected, not
    raised)."""


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

    exit_code = EXIT_INFRA


class HomeError(SphereError):
    """``$SPHERE_HOME`` or an output directory is a file, read-only or cannot be created."""

    exit_code = EXIT_INFRA


class DiskFullError(SphereError):
    """Too little free space (or a quota, or a read-only file system) where SPHERE writes."""

    exit_code = EXIT_INFRA


class TrainingError(SphereError):
    """DPO training cannot start or failed (no pairs, too few for an eval split, ...)."""


class EvaluationError(SphereError):
    """Evaluation cannot run (unknown benchmark, missing model, ...)."""


class ErrorBudgetExceeded(SphereError):
    """More than ``orchestration.max_error_fraction`` of a stage's questions ended in error."""


class NotFoundError(SphereError):
    """A run, question or other record the user named does not exist (exit 1)."""


class RunNotFoundError(NotFoundError):
    """A run id that has no record and no artifacts."""


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception in the main thread (the CLI installs the handler).

    A ``KeyboardInterrupt`` so that code which already cleans up on Ctrl-C (marking a run
    record, closing files) does the same on SIGTERM; the CLI exits 143 instead of 130.
    """

    def __init__(self, signum: int = _signal.SIGTERM):
        super().__init__(f"terminated by {_signal.Signals(signum).name}")
        self.signum = signum
