"""The one exception family for problems a user can fix.

Messages are full sentences that name the file and the fix; the CLI turns them into one-line errors,
the runner into failed manifest rows.
"""


class TsnpipeError(Exception):
    """A problem with the user's input, options or data, explained in one sentence."""
