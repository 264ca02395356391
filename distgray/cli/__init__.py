"""The command lines: flags and environment (the only reader of argv and environ), logging, exit codes,
and the composition of a run (``run``).
"""
