"""The one exception type hubstyle raises for bad input: the CLI prints its message as one line."""


class HubstyleError(Exception):
    """A user-facing error: the message says what was wrong, with the value, and what to do."""
