"""The base class for errors a user can fix (the CLI prints them as one line and exits 2), and ConfigError."""


class FmlabError(Exception):
    """A bad input: the message names the file or key and the fix."""


class ConfigError(FmlabError, ValueError):
    """A bad key or value; the message names the key and what is allowed."""
