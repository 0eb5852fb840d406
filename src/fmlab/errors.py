"""The one base class for errors a user can fix; the CLI prints them as one line and exits 2."""


class FmlabError(Exception):
    """A bad input: the message names the file or key and the fix."""
