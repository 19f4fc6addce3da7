"""The one error type for problems a user can fix (bad file, bad option, existing output)."""


class MRSRError(Exception):
    """A user-facing problem; the message names the file or option and says what to do.

    The command line prints it on one line and exits with code 2; internal bugs raise other
    exceptions and keep their traceback.
    """
