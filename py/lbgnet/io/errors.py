"""
lbgnet.io.errors
================

Exceptions for expected input problems.  Their message always starts with the
offending file, so that a script can print ``str(err)`` as one clear line.
"""


class InputFileError(ValueError):
    """An input file is missing, unreadable or not in the expected format.

    Parameters
    ----------
    path : str
        The offending file.
    problem : str
        What is wrong with it, in a few words.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{path}: {problem}')


class MissingInputError(InputFileError, FileNotFoundError):
    """The input file does not exist."""

    def __init__(self, path, problem='no such file'):
        super().__init__(path, problem)
