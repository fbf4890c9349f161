"""Command-line entry points: each module has ``parse(options=None)`` and ``main(args=None, comm=None)``."""
