"""One error type for everything a user can get wrong; the CLI prints it as a single line."""


class CristaeZooError(Exception):
    """A problem with the user's input, reported as one line that names the file and the problem."""
