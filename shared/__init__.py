"""NeoPulse plumbing shared by every module: bus, config, errors, logging, metrics.

Nothing here knows about trading rules; modules live under services/.
"""
