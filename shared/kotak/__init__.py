"""Kotak Neo through the official SDK (neo_api_client): settings, session, mapping, KotakBroker.

Importing this package stops the SDK from writing ./logs (NEO_LOG_FILE_ENABLED=false unless set), and keeps the
account's holdings, which the SDK caches on disk at every holdings() and positions() call (~/.kotak_neo, readable
by every user by default), in a directory only this user can read, removed at exit (NEO_HOLDINGS_CACHE_DIR
unless set).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("NEO_LOG_FILE_ENABLED", "false")
if "NEO_HOLDINGS_CACHE_DIR" not in os.environ:
    _private = tempfile.mkdtemp(prefix="neopulse-kotak-")  # mode 0700, a new name each process
    os.environ["NEO_HOLDINGS_CACHE_DIR"] = _private
    atexit.register(shutil.rmtree, _private, ignore_errors=True)
