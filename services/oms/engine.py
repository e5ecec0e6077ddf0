"""The OMS order engine: write-ahead to the ledger, place through the broker, apply broker events, publish updates.

OrderEngine is the front the module, reconciliation, the service and the tests use; its parts, each built on the
one before it (methods found through the class, so no call goes through an extra hop):

    book.py          the book: orders, ids, locks, sequencer; transition() writes, applies and publishes
    broker_news.py   broker events, fill charges, news the ledger did not take (until_recorded)
    placement.py     the broker call, acknowledgements, placements of unknown outcome
    write_ahead.py   accepted decisions written ahead (PENDING_NEW), then placed; decisions not sent
    cancelling.py    cancels, sent even while the ledger refuses them
    modifying.py     changes of a working order's terms, written ahead (MODIFY_PENDING), then sent
"""

from __future__ import annotations

from services.oms.book import NOT_YET_PLACED, BookMoved, given_up
from services.oms.broker_news import event_audit
from services.oms.modifying import Modifying
from services.oms.write_ahead import STOPPED_NOT_SENT, WriteAhead
from shared.errors import OrderStateError

__all__ = ["NOT_YET_PLACED", "STOPPED_NOT_SENT", "BookMoved", "OrderEngine", "OrderStateError", "event_audit",
           "given_up"]


class OrderEngine(WriteAhead, Modifying):
    """One order book for the process. Per-order locks keep placement, cancel and events from interleaving."""
