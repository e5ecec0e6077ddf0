from shared.contracts import trading_pb2 as _trading_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TradingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRADING_STATE_UNSPECIFIED: _ClassVar[TradingState]
    TRADING_STATE_ACTIVE: _ClassVar[TradingState]
    TRADING_STATE_REDUCING: _ClassVar[TradingState]
    TRADING_STATE_HALTED: _ClassVar[TradingState]
TRADING_STATE_UNSPECIFIED: TradingState
TRADING_STATE_ACTIVE: TradingState
TRADING_STATE_REDUCING: TradingState
TRADING_STATE_HALTED: TradingState

class RiskLimits(_message.Message):
    __slots__ = ("max_order_quantity", "max_order_value_paise", "max_position_quantity", "max_open_orders", "max_orders_per_second", "daily_loss_reducing_paise", "daily_loss_halt_paise", "price_band_bps", "square_off_time_ist", "enforce_market_hours", "max_position_value_paise", "max_gross_exposure_paise")
    MAX_ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_VALUE_PAISE_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITION_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDERS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DAILY_LOSS_REDUCING_PAISE_FIELD_NUMBER: _ClassVar[int]
    DAILY_LOSS_HALT_PAISE_FIELD_NUMBER: _ClassVar[int]
    PRICE_BAND_BPS_FIELD_NUMBER: _ClassVar[int]
    SQUARE_OFF_TIME_IST_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_MARKET_HOURS_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITION_VALUE_PAISE_FIELD_NUMBER: _ClassVar[int]
    MAX_GROSS_EXPOSURE_PAISE_FIELD_NUMBER: _ClassVar[int]
    max_order_quantity: int
    max_order_value_paise: int
    max_position_quantity: int
    max_open_orders: int
    max_orders_per_second: float
    daily_loss_reducing_paise: int
    daily_loss_halt_paise: int
    price_band_bps: int
    square_off_time_ist: str
    enforce_market_hours: bool
    max_position_value_paise: int
    max_gross_exposure_paise: int
    def __init__(self, max_order_quantity: _Optional[int] = ..., max_order_value_paise: _Optional[int] = ..., max_position_quantity: _Optional[int] = ..., max_open_orders: _Optional[int] = ..., max_orders_per_second: _Optional[float] = ..., daily_loss_reducing_paise: _Optional[int] = ..., daily_loss_halt_paise: _Optional[int] = ..., price_band_bps: _Optional[int] = ..., square_off_time_ist: _Optional[str] = ..., enforce_market_hours: _Optional[bool] = ..., max_position_value_paise: _Optional[int] = ..., max_gross_exposure_paise: _Optional[int] = ...) -> None: ...

class StreamDecisionsRequest(_message.Message):
    __slots__ = ("rejections_only", "after_sequence", "accepted_only")
    REJECTIONS_ONLY_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ONLY_FIELD_NUMBER: _ClassVar[int]
    rejections_only: bool
    after_sequence: int
    accepted_only: bool
    def __init__(self, rejections_only: _Optional[bool] = ..., after_sequence: _Optional[int] = ..., accepted_only: _Optional[bool] = ...) -> None: ...

class SubmitOrderRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderRequest
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderRequest, _Mapping]] = ...) -> None: ...

class SubmitOrderResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _trading_pb2.RiskDecision
    def __init__(self, decision: _Optional[_Union[_trading_pb2.RiskDecision, _Mapping]] = ...) -> None: ...

class CheckModifyRequest(_message.Message):
    __slots__ = ("order", "filled_quantity")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderRequest
    filled_quantity: int
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderRequest, _Mapping]] = ..., filled_quantity: _Optional[int] = ...) -> None: ...

class CheckModifyResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _trading_pb2.RiskDecision
    def __init__(self, decision: _Optional[_Union[_trading_pb2.RiskDecision, _Mapping]] = ...) -> None: ...

class GetRiskStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRiskStateResponse(_message.Message):
    __slots__ = ("state", "limits", "open_orders", "realised_pnl_paise", "unrealised_pnl_paise", "state_reason", "positions")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    REALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    UNREALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    state: TradingState
    limits: RiskLimits
    open_orders: int
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    state_reason: str
    positions: _containers.RepeatedCompositeFieldContainer[_trading_pb2.Position]
    def __init__(self, state: _Optional[_Union[TradingState, str]] = ..., limits: _Optional[_Union[RiskLimits, _Mapping]] = ..., open_orders: _Optional[int] = ..., realised_pnl_paise: _Optional[int] = ..., unrealised_pnl_paise: _Optional[int] = ..., state_reason: _Optional[str] = ..., positions: _Optional[_Iterable[_Union[_trading_pb2.Position, _Mapping]]] = ...) -> None: ...

class SetRiskLimitsRequest(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: RiskLimits
    def __init__(self, limits: _Optional[_Union[RiskLimits, _Mapping]] = ...) -> None: ...

class SetRiskLimitsResponse(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: RiskLimits
    def __init__(self, limits: _Optional[_Union[RiskLimits, _Mapping]] = ...) -> None: ...

class SetKillSwitchRequest(_message.Message):
    __slots__ = ("engaged", "reason", "cancel_open_orders")
    ENGAGED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    engaged: bool
    reason: str
    cancel_open_orders: bool
    def __init__(self, engaged: _Optional[bool] = ..., reason: _Optional[str] = ..., cancel_open_orders: _Optional[bool] = ...) -> None: ...

class SetKillSwitchResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: TradingState
    def __init__(self, state: _Optional[_Union[TradingState, str]] = ...) -> None: ...
