"""Errors that reach the user as one line, not a traceback."""


class UserError(Exception):
    """A mistake in the user's input or set-up; the CLI prints it and exits with code 2."""
