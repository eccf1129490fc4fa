"""Errors reported as one line by the CLI, without a traceback."""


class UsageError(Exception):
    """Bad input the user can fix (unknown game, bad config key, ...): exit code 2, nothing written."""


class RunError(Exception):
    """A run that had to stop (full disk, non-finite loss, ...): exit code 1, earlier checkpoints intact."""
