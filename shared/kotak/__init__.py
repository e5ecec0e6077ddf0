"""Kotak Neo through the official SDK (neo_api_client): settings, session, mapping, KotakBroker.

Importing this package stops the SDK from writing ./logs (NEO_LOG_FILE_ENABLED=false unless set).
"""

import os

os.environ.setdefault("NEO_LOG_FILE_ENABLED", "false")
