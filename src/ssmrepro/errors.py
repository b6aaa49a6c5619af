"""Errors a user can fix. The command line prints them as one line and exits with status 2."""


class UserError(RuntimeError):
    """Bad input, missing data or missing weights: the message says what to do."""
