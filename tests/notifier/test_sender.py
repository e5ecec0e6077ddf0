"""The send queue on its own: what a full queue sheds, and what stop() still sends and counts.

Pure TelegramSender with a plain send function; the Bot API paths are in test_review_delivery.py.
"""

from __future__ import annotations

from services.notifier.sender import TelegramSender


async def record(chat_id: int, html: str) -> None:
    return None


def sender_of(send=record, queue_size: int = 100, window_seconds: float = 0.01) -> TelegramSender:
    return TelegramSender(send, [1], window_seconds=window_seconds, queue_size=queue_size, attempts=3,
                          backoff_seconds=0.01)


def test_an_ordinary_block_offered_to_a_queue_full_of_urgent_ones_is_the_one_shed():
    sender = sender_of(queue_size=3)
    for i in range(3):
        sender.offer(f"🛑 kill switch {i}", urgent=True)

    sender.offer("✅ fill")

    assert list(sender.queue.urgent) == ["🛑 kill switch 0", "🛑 kill switch 1", "🛑 kill switch 2"]
    assert list(sender.queue.ordinary) == [] and sender.dropped == 1


def test_an_urgent_block_offered_to_a_full_queue_sheds_an_ordinary_one_first():
    sender = sender_of(queue_size=2)
    sender.offer("🛑 kill switch", urgent=True)
    sender.offer("✅ fill")

    sender.offer("⚠️ risk breach", urgent=True)

    assert list(sender.queue.urgent) == ["🛑 kill switch", "⚠️ risk breach"]
    assert list(sender.queue.ordinary) == [] and sender.dropped == 1
