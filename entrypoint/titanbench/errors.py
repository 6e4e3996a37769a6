"""The one error type users see: a single clear line and a non-zero exit, never a traceback."""

import click


class TitanbenchError(click.ClickException):
    """Bad input or an unmet precondition. click prints `Error: <message>` and exits 1."""
