"""Pure, clock-free plans: which strip goes to which worker (speeds, requeues, backups), and whole-file
units of a batch. Time comes in as ``now``.
"""
