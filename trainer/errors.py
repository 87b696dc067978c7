"""The one exception type a user ever sees as a message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: a config value, a name, a path.

    The message is one line that says what was wrong and what is allowed.
    Entry points catch it, print ``error: <message>`` to stderr and exit with
    status 2; nothing existing has been changed when it is raised.
    """
