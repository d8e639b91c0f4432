"""Expected failures of the ``fastnoise`` commands, as one line in command-line terms.

The library's errors speak Python (``download=True``, ``overwrite=True``); here they are
reworded for the command line (``--download``, ``--overwrite``). Anything not listed is a
bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CLIError", "NOT_FOUND_ADVICE", "expected_error"]

NOT_FOUND_ADVICE = (
    "To fix: pass --download (needs internet), or --data-root DIR naming a folder that has "
    "the files (torchvision layout); --dataset embedded works offline"
)


class CLIError(Exception):
    """A mistake in the request, already worded for the command line."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def expected_error(error: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit status)`` for an expected failure, None for a bug."""
    from fastnoise.data import DatasetNotFoundError
    from fastnoise.train.run_folder import OutputFolderInUseError, ResumeMismatchError
    from fastnoise.train.trainer import NonFiniteLossError

    if isinstance(error, CLIError):
        return str(error), error.status
    if isinstance(error, DatasetNotFoundError):
        problem = str(error).split(" To fix:")[0]  # the rest is advice for Python callers
        return f"{problem} {NOT_FOUND_ADVICE}", 2
    if isinstance(error, OutputFolderInUseError):
        return _folder_in_use(error), 2
    if isinstance(error, ResumeMismatchError):
        return _resume_mismatch(error), 2
    if isinstance(error, NonFiniteLossError):
        return str(error), 1  # the request was fine; the training diverged
    if isinstance(error, (ValueError, FileNotFoundError, PermissionError)):
        return str(error), 2
    return None


def _folder_in_use(error) -> str:
    from fastnoise.train.run_folder import describe_run

    return (
        f"--out {error.out_dir} already holds a training run "
        f"({describe_run(error.found, error.epoch)}); pass --resume to continue it or "
        "--overwrite to replace it"
    )


def _resume_mismatch(error) -> str:
    from fastnoise.train.cli_help import format_default

    def flag(field: str) -> str:
        return "--" + field.replace("_", "-")

    differences = "; ".join(
        f"{flag(m.field)} is {format_default(m.saved, m.field)} in the checkpoint, "
        f"{format_default(m.requested, m.field)} here"
        for m in error.mismatches
    )
    return (
        f"cannot resume {error.checkpoint}: {differences}. Pass the values it was trained "
        "with, or start over with --overwrite or another --out"
    )
