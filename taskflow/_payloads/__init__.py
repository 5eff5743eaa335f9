"""Task arguments and results as stored: the type-preserving codec, encryption and
size limits.

Internal: import from :mod:`taskflow` instead.
"""
