from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Instrument(_message.Message):
    __slots__ = ("token", "symbol", "exchange_segment", "tick_size_paise", "lot_size", "freeze_quantity", "name", "isin", "price_band_bps", "price_factor", "is_index", "expiry_ns")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_PAISE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    FREEZE_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISIN_FIELD_NUMBER: _ClassVar[int]
    PRICE_BAND_BPS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    IS_INDEX_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_NS_FIELD_NUMBER: _ClassVar[int]
    token: int
    symbol: str
    exchange_segment: str
    tick_size_paise: int
    lot_size: int
    freeze_quantity: int
    name: str
    isin: str
    price_band_bps: int
    price_factor: PriceFactor
    is_index: bool
    expiry_ns: int
    def __init__(self, token: _Optional[int] = ..., symbol: _Optional[str] = ..., exchange_segment: _Optional[str] = ..., tick_size_paise: _Optional[int] = ..., lot_size: _Optional[int] = ..., freeze_quantity: _Optional[int] = ..., name: _Optional[str] = ..., isin: _Optional[str] = ..., price_band_bps: _Optional[int] = ..., price_factor: _Optional[_Union[PriceFactor, _Mapping]] = ..., is_index: _Optional[bool] = ..., expiry_ns: _Optional[int] = ...) -> None: ...

class PriceFactor(_message.Message):
    __slots__ = ("numerator", "denominator")
    NUMERATOR_FIELD_NUMBER: _ClassVar[int]
    DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    numerator: int
    denominator: int
    def __init__(self, numerator: _Optional[int] = ..., denominator: _Optional[int] = ...) -> None: ...

class Tick(_message.Message):
    __slots__ = ("token", "exchange_segment", "ts_ns", "ltp_paise", "ltq", "volume", "bid_paise", "ask_paise", "bid_qty", "ask_qty", "open_paise", "high_paise", "low_paise", "close_paise", "open_interest", "atp_paise", "recv_ns", "bids", "asks")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    LTP_PAISE_FIELD_NUMBER: _ClassVar[int]
    LTQ_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    BID_PAISE_FIELD_NUMBER: _ClassVar[int]
    ASK_PAISE_FIELD_NUMBER: _ClassVar[int]
    BID_QTY_FIELD_NUMBER: _ClassVar[int]
    ASK_QTY_FIELD_NUMBER: _ClassVar[int]
    OPEN_PAISE_FIELD_NUMBER: _ClassVar[int]
    HIGH_PAISE_FIELD_NUMBER: _ClassVar[int]
    LOW_PAISE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_PAISE_FIELD_NUMBER: _ClassVar[int]
    OPEN_INTEREST_FIELD_NUMBER: _ClassVar[int]
    ATP_PAISE_FIELD_NUMBER: _ClassVar[int]
    RECV_NS_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    token: int
    exchange_segment: str
    ts_ns: int
    ltp_paise: int
    ltq: int
    volume: int
    bid_paise: int
    ask_paise: int
    bid_qty: int
    ask_qty: int
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    open_interest: int
    atp_paise: int
    recv_ns: int
    bids: _containers.RepeatedCompositeFieldContainer[DepthLevel]
    asks: _containers.RepeatedCompositeFieldContainer[DepthLevel]
    def __init__(self, token: _Optional[int] = ..., exchange_segment: _Optional[str] = ..., ts_ns: _Optional[int] = ..., ltp_paise: _Optional[int] = ..., ltq: _Optional[int] = ..., volume: _Optional[int] = ..., bid_paise: _Optional[int] = ..., ask_paise: _Optional[int] = ..., bid_qty: _Optional[int] = ..., ask_qty: _Optional[int] = ..., open_paise: _Optional[int] = ..., high_paise: _Optional[int] = ..., low_paise: _Optional[int] = ..., close_paise: _Optional[int] = ..., open_interest: _Optional[int] = ..., atp_paise: _Optional[int] = ..., recv_ns: _Optional[int] = ..., bids: _Optional[_Iterable[_Union[DepthLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[DepthLevel, _Mapping]]] = ...) -> None: ...

class DepthLevel(_message.Message):
    __slots__ = ("price_paise", "quantity", "orders")
    PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    price_paise: int
    quantity: int
    orders: int
    def __init__(self, price_paise: _Optional[int] = ..., quantity: _Optional[int] = ..., orders: _Optional[int] = ...) -> None: ...

class TickBatch(_message.Message):
    __slots__ = ("ticks",)
    TICKS_FIELD_NUMBER: _ClassVar[int]
    ticks: _containers.RepeatedCompositeFieldContainer[Tick]
    def __init__(self, ticks: _Optional[_Iterable[_Union[Tick, _Mapping]]] = ...) -> None: ...

class Candle(_message.Message):
    __slots__ = ("token", "exchange_segment", "start_ns", "open_paise", "high_paise", "low_paise", "close_paise", "volume", "tick_count", "symbol")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    OPEN_PAISE_FIELD_NUMBER: _ClassVar[int]
    HIGH_PAISE_FIELD_NUMBER: _ClassVar[int]
    LOW_PAISE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_PAISE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TICK_COUNT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    token: int
    exchange_segment: str
    start_ns: int
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    volume: int
    tick_count: int
    symbol: str
    def __init__(self, token: _Optional[int] = ..., exchange_segment: _Optional[str] = ..., start_ns: _Optional[int] = ..., open_paise: _Optional[int] = ..., high_paise: _Optional[int] = ..., low_paise: _Optional[int] = ..., close_paise: _Optional[int] = ..., volume: _Optional[int] = ..., tick_count: _Optional[int] = ..., symbol: _Optional[str] = ...) -> None: ...

class CandleBatch(_message.Message):
    __slots__ = ("candles",)
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    candles: _containers.RepeatedCompositeFieldContainer[Candle]
    def __init__(self, candles: _Optional[_Iterable[_Union[Candle, _Mapping]]] = ...) -> None: ...
