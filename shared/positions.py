"""Position and P&L accounting from fills, in integer paise. Used by risk and the OMS alike.

Pure bookkeeping: no bus, no I/O. Prices and costs are per unit of price; P&L is scaled by the price factor
the fills' orders carry (shared/price_factor.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import cast

from shared.contracts import trading_pb2
from shared.price_factor import ONE, factor_of, price_factor

# OrderRequest.strategy_tag of the orders that close positions for the platform, not for a strategy: risk's
# intraday square-off and the OMS's SquareOff request. Strategies holding the position see their fills.
SQUAREOFF_TAG = "SQUAREOFF"


def exit_side(held: int) -> trading_pb2.Side:
    """The side that closes a position of `held` (positive: long)."""
    return trading_pb2.SIDE_SELL if held > 0 else trading_pb2.SIDE_BUY


def whole_lots(limit: int, lot: int) -> int:
    """The largest order within `limit` units that is a whole number of `lot`s; one lot at least."""
    return max(lot, limit - limit % lot)


def chunks(quantity: int, largest: int) -> list[int]:
    """`quantity` as orders of at most `largest` each (0: one order); none for nothing to close."""
    if quantity <= 0:
        return []
    if not largest or quantity <= largest:
        return [quantity]
    whole, rest = divmod(quantity, largest)
    return [largest] * whole + ([rest] if rest else [])


@dataclass
class PositionState:
    token: int
    exchange_segment: str = ""
    symbol: str = ""
    product: int = trading_pb2.PRODUCT_MIS
    net_quantity: int = 0
    # Price x quantity of the open quantity, paise, not scaled by the factor: open_cost / net is the average
    # price (float internally would drift; keep cost).
    open_cost_paise: int = 0
    realised_pnl_paise: int = 0
    last_price_paise: int = 0
    buy_quantity: int = 0
    sell_quantity: int = 0
    charges_paise: int = 0
    # Money = price x quantity x price_factor (1 for shares; e.g. 100 for a contract quoted per barrel whose
    # quantity counts lots of 100 barrels).
    price_factor: Fraction = ONE
    # What realised_pnl_paise left out when it was rounded to paise (a fractional factor only): carried into the
    # next fill's P&L, so fills add up to the exact total rather than a sum of rounded pieces.
    realised_remainder: Fraction = Fraction(0)

    @property
    def average_price_paise(self) -> int:
        return abs(self.open_cost_paise) // abs(self.net_quantity) if self.net_quantity else 0

    @property
    def unrealised_pnl_paise(self) -> int:
        if not self.net_quantity or not self.last_price_paise:
            return 0
        move = self.net_quantity * self.last_price_paise - self.open_cost_paise
        return move if self.price_factor is ONE else round(move * self.price_factor)

    def _realise(self, price_move_paise: int) -> int:
        """Book the P&L of a closed quantity's price x quantity move: scaled by the factor, in whole paise."""
        if self.price_factor is ONE:  # shares: exact in int (no Fraction on every fill)
            self.realised_pnl_paise += price_move_paise
            return price_move_paise
        exact = price_move_paise * self.price_factor + self.realised_remainder
        booked = round(exact)
        self.realised_remainder = exact - booked
        self.realised_pnl_paise += booked
        return booked

    def apply_fill(self, side: int, quantity: int, price_paise: int, charges_paise: int = 0) -> int:
        """Apply one fill; returns the realised P&L (paise) this fill closed."""
        signed = quantity if side == trading_pb2.SIDE_BUY else -quantity
        if side == trading_pb2.SIDE_BUY:
            self.buy_quantity += quantity
        else:
            self.sell_quantity += quantity
        self.charges_paise += charges_paise
        realised = 0
        if self.net_quantity == 0 or (self.net_quantity > 0) == (signed > 0):
            self.open_cost_paise += signed * price_paise
            self.net_quantity += signed
        else:
            closing = min(abs(signed), abs(self.net_quantity))
            avg_cost_closed = self.open_cost_paise * closing // abs(self.net_quantity)
            direction = 1 if self.net_quantity > 0 else -1
            realised = self._realise(direction * closing * price_paise - avg_cost_closed)
            self.open_cost_paise -= avg_cost_closed
            self.net_quantity += signed
            remainder = abs(signed) - closing
            if self.net_quantity == 0:
                self.open_cost_paise = 0
            if remainder:
                self.open_cost_paise = (1 if signed > 0 else -1) * remainder * price_paise
        # A trade's price is as new a price as any: the next tick marks it again. Kept at the first fill's, a token
        # without ticks (a manual order on an instrument no one subscribes; a stalled feed) was valued at it for good.
        self.last_price_paise = price_paise
        return realised

    def start_day(self) -> None:
        """A new trading day: today's realised P&L, charges and bought/sold quantities start from zero, and a
        quantity held overnight is carried at its last price (as the broker's day P&L values it), so its gain or
        loss before today is not counted again today. Its entry price is not kept."""
        self.realised_pnl_paise = self.charges_paise = 0
        self.realised_remainder = Fraction(0)
        self.buy_quantity = self.sell_quantity = 0
        if self.net_quantity and self.last_price_paise:
            self.open_cost_paise = self.net_quantity * self.last_price_paise

    def to_proto(self) -> trading_pb2.Position:
        return trading_pb2.Position(
            token=self.token, exchange_segment=self.exchange_segment, symbol=self.symbol,
            product=cast(trading_pb2.Product, self.product), net_quantity=self.net_quantity,
            average_price_paise=self.average_price_paise, realised_pnl_paise=self.realised_pnl_paise,
            unrealised_pnl_paise=self.unrealised_pnl_paise, last_price_paise=self.last_price_paise,
            buy_quantity=self.buy_quantity, sell_quantity=self.sell_quantity, charges_paise=self.charges_paise,
            price_factor=price_factor(self.price_factor))


class PositionBook:
    """Positions keyed by (token, product), fed by fills and marked by last prices. P&L and charges are the
    trading day's: whoever owns a book calls start_day() when a new IST day starts."""

    def __init__(self) -> None:
        self.positions: dict[tuple[int, int], PositionState] = {}
        self._by_token: dict[int, list[PositionState]] = {}

    def position(self, token: int, product: int = trading_pb2.PRODUCT_MIS) -> PositionState:
        key = (token, product)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = PositionState(token=token, product=product)
            self._by_token.setdefault(token, []).append(pos)
        return pos

    def net_quantity(self, token: int) -> int:
        """Net quantity across products."""
        return sum(p.net_quantity for p in self._by_token.get(token, ()))

    def apply_update(self, update: trading_pb2.OrderUpdate) -> int:
        """Apply the fill an OrderUpdate carries (if any); returns realised P&L of it."""
        if update.last_fill_quantity <= 0:
            return 0
        req = update.request
        pos = self.position(req.token, req.product or trading_pb2.PRODUCT_MIS)
        pos.exchange_segment = pos.exchange_segment or req.exchange_segment
        pos.symbol = pos.symbol or req.symbol
        if req.HasField("price_factor"):  # the instrument's, stamped by risk; one contract, one factor
            pos.price_factor = factor_of(req.price_factor)
        return pos.apply_fill(req.side, update.last_fill_quantity, update.last_fill_price_paise,
                              update.last_fill_charges_paise)

    def restore(self, position: trading_pb2.Position) -> PositionState:
        """Re-seed one position from its snapshot (a restarted module asking the OMS)."""
        pos = self.position(position.token, position.product or trading_pb2.PRODUCT_MIS)
        pos.exchange_segment, pos.symbol = position.exchange_segment, position.symbol
        pos.price_factor, pos.realised_remainder = factor_of(position.price_factor), Fraction(0)
        pos.net_quantity = position.net_quantity
        pos.open_cost_paise = position.net_quantity * position.average_price_paise
        pos.realised_pnl_paise = position.realised_pnl_paise
        pos.last_price_paise = position.last_price_paise
        pos.buy_quantity, pos.sell_quantity = position.buy_quantity, position.sell_quantity
        pos.charges_paise = position.charges_paise
        return pos

    def start_day(self) -> None:
        """A new trading day for every position (PositionState.start_day); those closed before it are dropped."""
        held = [p for p in self.positions.values() if p.net_quantity]
        self.positions, self._by_token = {}, {}
        for pos in held:
            pos.start_day()
            self.positions[(pos.token, pos.product)] = pos
            self._by_token.setdefault(pos.token, []).append(pos)

    def mark(self, token: int, price_paise: int) -> None:
        for pos in self._by_token.get(token, ()):
            pos.last_price_paise = price_paise

    def realised_pnl_paise(self) -> int:
        return sum(p.realised_pnl_paise for p in self.positions.values())

    def unrealised_pnl_paise(self) -> int:
        return sum(p.unrealised_pnl_paise for p in self.positions.values())

    def charges_paise(self) -> int:
        return sum(p.charges_paise for p in self.positions.values())

    def to_protos(self) -> list[trading_pb2.Position]:
        return [p.to_proto() for p in self.positions.values()]
