"""A position in a token with no ticks (a manual order on an instrument no strategy subscribes, a stalled feed) kept
its first fill's price as its last price for good: scaled in 10 @ 100 then 10 @ 90, it showed +Rs 100 unrealised
where the last trade (90) says -Rs 100, and risk's daily loss and the next day's carried base used that price."""

from shared.contracts import trading_pb2 as t
from shared.positions import PositionBook


def fill(side: int, quantity: int, price: int) -> t.OrderUpdate:
    return t.OrderUpdate(request=t.OrderRequest(token=7, side=side, product=t.PRODUCT_MIS),
                         last_fill_quantity=quantity, last_fill_price_paise=price)


def test_a_later_fill_marks_the_position_at_its_price_until_the_next_tick():
    book = PositionBook()
    book.apply_update(fill(t.SIDE_BUY, 10, 100_00))
    book.apply_update(fill(t.SIDE_BUY, 10, 90_00))

    assert (book.position(7).last_price_paise, book.unrealised_pnl_paise()) == (90_00, -100_00)
