"""Keel's helpers for Django: a primary/replica database router and settings.

Only Django itself is required. See README.md next to this package.
"""

__version__ = "0.1.0"
