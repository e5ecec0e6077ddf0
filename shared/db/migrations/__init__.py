"""Versioned SQL files (NNNN_name.sql) applied in order by shared/db/migrate.py.

Shipped as package data; never edit one that has been applied, add the next number instead.
"""
