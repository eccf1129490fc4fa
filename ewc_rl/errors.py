"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UsageError(Exception):
    """Bad input from the user (unknown game, bad config key, ...): reported without a traceback."""
