from shared.contracts import market_pb2 as _market_pb2
from shared.contracts import trading_pb2 as _trading_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PausedBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAUSED_BY_UNSPECIFIED: _ClassVar[PausedBy]
    PAUSED_BY_OPERATOR: _ClassVar[PausedBy]
    PAUSED_BY_NEOPULSE: _ClassVar[PausedBy]
PAUSED_BY_UNSPECIFIED: PausedBy
PAUSED_BY_OPERATOR: PausedBy
PAUSED_BY_NEOPULSE: PausedBy

class StreamSignalsRequest(_message.Message):
    __slots__ = ("strategies", "after_sequence")
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    strategies: _containers.RepeatedScalarFieldContainer[str]
    after_sequence: int
    def __init__(self, strategies: _Optional[_Iterable[str]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class StreamCandlesRequest(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class StrategyInfo(_message.Message):
    __slots__ = ("name", "kind", "paused", "params", "tokens", "signals_emitted", "pause_reason", "paused_by", "paused_at_ns", "day_pnl_paise", "max_daily_loss_paise", "positions")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_EMITTED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    DAY_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_LOSS_PAISE_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    paused: bool
    params: _containers.ScalarMap[str, str]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    signals_emitted: int
    pause_reason: str
    paused_by: PausedBy
    paused_at_ns: int
    day_pnl_paise: int
    max_daily_loss_paise: int
    positions: _containers.RepeatedCompositeFieldContainer[StrategyPosition]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., paused: _Optional[bool] = ..., params: _Optional[_Mapping[str, str]] = ..., tokens: _Optional[_Iterable[int]] = ..., signals_emitted: _Optional[int] = ..., pause_reason: _Optional[str] = ..., paused_by: _Optional[_Union[PausedBy, str]] = ..., paused_at_ns: _Optional[int] = ..., day_pnl_paise: _Optional[int] = ..., max_daily_loss_paise: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[StrategyPosition, _Mapping]]] = ...) -> None: ...

class StrategyPosition(_message.Message):
    __slots__ = ("token", "symbol", "product", "net_quantity", "entry_price_paise", "stop_paise", "target_paise", "stop_reached")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    NET_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    STOP_PAISE_FIELD_NUMBER: _ClassVar[int]
    TARGET_PAISE_FIELD_NUMBER: _ClassVar[int]
    STOP_REACHED_FIELD_NUMBER: _ClassVar[int]
    token: int
    symbol: str
    product: _trading_pb2.Product
    net_quantity: int
    entry_price_paise: int
    stop_paise: int
    target_paise: int
    stop_reached: bool
    def __init__(self, token: _Optional[int] = ..., symbol: _Optional[str] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., net_quantity: _Optional[int] = ..., entry_price_paise: _Optional[int] = ..., stop_paise: _Optional[int] = ..., target_paise: _Optional[int] = ..., stop_reached: _Optional[bool] = ...) -> None: ...

class ListStrategiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStrategiesResponse(_message.Message):
    __slots__ = ("strategies",)
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    strategies: _containers.RepeatedCompositeFieldContainer[StrategyInfo]
    def __init__(self, strategies: _Optional[_Iterable[_Union[StrategyInfo, _Mapping]]] = ...) -> None: ...

class PauseStrategyRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseStrategyResponse(_message.Message):
    __slots__ = ("strategy",)
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    strategy: StrategyInfo
    def __init__(self, strategy: _Optional[_Union[StrategyInfo, _Mapping]] = ...) -> None: ...

class ResumeStrategyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumeStrategyResponse(_message.Message):
    __slots__ = ("strategy",)
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    strategy: StrategyInfo
    def __init__(self, strategy: _Optional[_Union[StrategyInfo, _Mapping]] = ...) -> None: ...

class SetStrategyParamsRequest(_message.Message):
    __slots__ = ("name", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SetStrategyParamsResponse(_message.Message):
    __slots__ = ("strategy",)
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    strategy: StrategyInfo
    def __init__(self, strategy: _Optional[_Union[StrategyInfo, _Mapping]] = ...) -> None: ...

class GetQuotesRequest(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class GetQuotesResponse(_message.Message):
    __slots__ = ("quotes",)
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[Quote]
    def __init__(self, quotes: _Optional[_Iterable[_Union[Quote, _Mapping]]] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("instrument", "tick")
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    instrument: _market_pb2.Instrument
    tick: _market_pb2.Tick
    def __init__(self, instrument: _Optional[_Union[_market_pb2.Instrument, _Mapping]] = ..., tick: _Optional[_Union[_market_pb2.Tick, _Mapping]] = ...) -> None: ...
