from shared.contracts import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class OrderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_TYPE_UNSPECIFIED: _ClassVar[OrderType]
    ORDER_TYPE_MARKET: _ClassVar[OrderType]
    ORDER_TYPE_LIMIT: _ClassVar[OrderType]
    ORDER_TYPE_STOP_LIMIT: _ClassVar[OrderType]
    ORDER_TYPE_STOP_MARKET: _ClassVar[OrderType]

class Product(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_UNSPECIFIED: _ClassVar[Product]
    PRODUCT_MIS: _ClassVar[Product]
    PRODUCT_CNC: _ClassVar[Product]
    PRODUCT_NRML: _ClassVar[Product]

class Validity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALIDITY_UNSPECIFIED: _ClassVar[Validity]
    VALIDITY_DAY: _ClassVar[Validity]
    VALIDITY_IOC: _ClassVar[Validity]

class OrderStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATUS_UNSPECIFIED: _ClassVar[OrderStatus]
    ORDER_STATUS_PENDING_NEW: _ClassVar[OrderStatus]
    ORDER_STATUS_SUBMITTED: _ClassVar[OrderStatus]
    ORDER_STATUS_OPEN: _ClassVar[OrderStatus]
    ORDER_STATUS_TRIGGER_PENDING: _ClassVar[OrderStatus]
    ORDER_STATUS_PARTIALLY_FILLED: _ClassVar[OrderStatus]
    ORDER_STATUS_TRADED: _ClassVar[OrderStatus]
    ORDER_STATUS_REJECTED: _ClassVar[OrderStatus]
    ORDER_STATUS_CANCEL_PENDING: _ClassVar[OrderStatus]
    ORDER_STATUS_CANCELLED: _ClassVar[OrderStatus]
    ORDER_STATUS_MODIFY_PENDING: _ClassVar[OrderStatus]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
ORDER_TYPE_UNSPECIFIED: OrderType
ORDER_TYPE_MARKET: OrderType
ORDER_TYPE_LIMIT: OrderType
ORDER_TYPE_STOP_LIMIT: OrderType
ORDER_TYPE_STOP_MARKET: OrderType
PRODUCT_UNSPECIFIED: Product
PRODUCT_MIS: Product
PRODUCT_CNC: Product
PRODUCT_NRML: Product
VALIDITY_UNSPECIFIED: Validity
VALIDITY_DAY: Validity
VALIDITY_IOC: Validity
ORDER_STATUS_UNSPECIFIED: OrderStatus
ORDER_STATUS_PENDING_NEW: OrderStatus
ORDER_STATUS_SUBMITTED: OrderStatus
ORDER_STATUS_OPEN: OrderStatus
ORDER_STATUS_TRIGGER_PENDING: OrderStatus
ORDER_STATUS_PARTIALLY_FILLED: OrderStatus
ORDER_STATUS_TRADED: OrderStatus
ORDER_STATUS_REJECTED: OrderStatus
ORDER_STATUS_CANCEL_PENDING: OrderStatus
ORDER_STATUS_CANCELLED: OrderStatus
ORDER_STATUS_MODIFY_PENDING: OrderStatus

class Signal(_message.Message):
    __slots__ = ("signal_id", "strategy", "token", "exchange_segment", "symbol", "side", "quantity", "order_type", "limit_price_paise", "trigger_price_paise", "product", "reason", "ts_ns", "tick_recv_ns", "sequence")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    TICK_RECV_NS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    strategy: str
    token: int
    exchange_segment: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType
    limit_price_paise: int
    trigger_price_paise: int
    product: Product
    reason: str
    ts_ns: int
    tick_recv_ns: int
    sequence: int
    def __init__(self, signal_id: _Optional[str] = ..., strategy: _Optional[str] = ..., token: _Optional[int] = ..., exchange_segment: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[int] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., limit_price_paise: _Optional[int] = ..., trigger_price_paise: _Optional[int] = ..., product: _Optional[_Union[Product, str]] = ..., reason: _Optional[str] = ..., ts_ns: _Optional[int] = ..., tick_recv_ns: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class SignalBatch(_message.Message):
    __slots__ = ("signals",)
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[Signal]
    def __init__(self, signals: _Optional[_Iterable[_Union[Signal, _Mapping]]] = ...) -> None: ...

class OrderRequest(_message.Message):
    __slots__ = ("client_order_id", "token", "exchange_segment", "symbol", "side", "quantity", "order_type", "price_paise", "trigger_price_paise", "product", "validity", "strategy_tag", "signal_id", "tick_recv_ns", "price_factor", "reason")
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TAG_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    TICK_RECV_NS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    client_order_id: str
    token: int
    exchange_segment: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType
    price_paise: int
    trigger_price_paise: int
    product: Product
    validity: Validity
    strategy_tag: str
    signal_id: str
    tick_recv_ns: int
    price_factor: _market_pb2.PriceFactor
    reason: str
    def __init__(self, client_order_id: _Optional[str] = ..., token: _Optional[int] = ..., exchange_segment: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[int] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., price_paise: _Optional[int] = ..., trigger_price_paise: _Optional[int] = ..., product: _Optional[_Union[Product, str]] = ..., validity: _Optional[_Union[Validity, str]] = ..., strategy_tag: _Optional[str] = ..., signal_id: _Optional[str] = ..., tick_recv_ns: _Optional[int] = ..., price_factor: _Optional[_Union[_market_pb2.PriceFactor, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RiskDecision(_message.Message):
    __slots__ = ("accepted", "reason_code", "reason", "order", "ts_ns", "strategy", "signal_id", "sequence", "decided_wall_ns")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_WALL_NS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason_code: str
    reason: str
    order: OrderRequest
    ts_ns: int
    strategy: str
    signal_id: str
    sequence: int
    decided_wall_ns: int
    def __init__(self, accepted: _Optional[bool] = ..., reason_code: _Optional[str] = ..., reason: _Optional[str] = ..., order: _Optional[_Union[OrderRequest, _Mapping]] = ..., ts_ns: _Optional[int] = ..., strategy: _Optional[str] = ..., signal_id: _Optional[str] = ..., sequence: _Optional[int] = ..., decided_wall_ns: _Optional[int] = ...) -> None: ...

class RiskDecisionBatch(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[RiskDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[RiskDecision, _Mapping]]] = ...) -> None: ...

class OrderUpdate(_message.Message):
    __slots__ = ("internal_id", "client_order_id", "exchange_order_id", "status", "previous_status", "filled_quantity", "average_price_paise", "last_fill_quantity", "last_fill_price_paise", "reason", "request", "ts_ns", "sequence", "last_fill_charges_paise", "reason_code", "changes_sent", "changed_by_hand")
    INTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    LAST_FILL_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LAST_FILL_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_FILL_CHARGES_PAISE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_SENT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_HAND_FIELD_NUMBER: _ClassVar[int]
    internal_id: str
    client_order_id: str
    exchange_order_id: str
    status: OrderStatus
    previous_status: OrderStatus
    filled_quantity: int
    average_price_paise: int
    last_fill_quantity: int
    last_fill_price_paise: int
    reason: str
    request: OrderRequest
    ts_ns: int
    sequence: int
    last_fill_charges_paise: int
    reason_code: str
    changes_sent: int
    changed_by_hand: bool
    def __init__(self, internal_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., exchange_order_id: _Optional[str] = ..., status: _Optional[_Union[OrderStatus, str]] = ..., previous_status: _Optional[_Union[OrderStatus, str]] = ..., filled_quantity: _Optional[int] = ..., average_price_paise: _Optional[int] = ..., last_fill_quantity: _Optional[int] = ..., last_fill_price_paise: _Optional[int] = ..., reason: _Optional[str] = ..., request: _Optional[_Union[OrderRequest, _Mapping]] = ..., ts_ns: _Optional[int] = ..., sequence: _Optional[int] = ..., last_fill_charges_paise: _Optional[int] = ..., reason_code: _Optional[str] = ..., changes_sent: _Optional[int] = ..., changed_by_hand: _Optional[bool] = ...) -> None: ...

class OrderUpdateBatch(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[OrderUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[OrderUpdate, _Mapping]]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("token", "exchange_segment", "symbol", "product", "net_quantity", "average_price_paise", "realised_pnl_paise", "unrealised_pnl_paise", "last_price_paise", "buy_quantity", "sell_quantity", "charges_paise", "price_factor")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    NET_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    REALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    UNREALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    BUY_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    SELL_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CHARGES_PAISE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    token: int
    exchange_segment: str
    symbol: str
    product: Product
    net_quantity: int
    average_price_paise: int
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    last_price_paise: int
    buy_quantity: int
    sell_quantity: int
    charges_paise: int
    price_factor: _market_pb2.PriceFactor
    def __init__(self, token: _Optional[int] = ..., exchange_segment: _Optional[str] = ..., symbol: _Optional[str] = ..., product: _Optional[_Union[Product, str]] = ..., net_quantity: _Optional[int] = ..., average_price_paise: _Optional[int] = ..., realised_pnl_paise: _Optional[int] = ..., unrealised_pnl_paise: _Optional[int] = ..., last_price_paise: _Optional[int] = ..., buy_quantity: _Optional[int] = ..., sell_quantity: _Optional[int] = ..., charges_paise: _Optional[int] = ..., price_factor: _Optional[_Union[_market_pb2.PriceFactor, _Mapping]] = ...) -> None: ...
