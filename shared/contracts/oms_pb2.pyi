from shared.contracts import trading_pb2 as _trading_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamOrderUpdatesRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderRequest
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderRequest, _Mapping]] = ...) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderUpdate
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderUpdate, _Mapping]] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderUpdate
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderUpdate, _Mapping]] = ...) -> None: ...

class ModifyOrderRequest(_message.Message):
    __slots__ = ("order_id", "quantity", "price_paise", "trigger_price_paise", "strategy_tag")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_PRICE_PAISE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TAG_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    quantity: int
    price_paise: int
    trigger_price_paise: int
    strategy_tag: str
    def __init__(self, order_id: _Optional[str] = ..., quantity: _Optional[int] = ..., price_paise: _Optional[int] = ..., trigger_price_paise: _Optional[int] = ..., strategy_tag: _Optional[str] = ...) -> None: ...

class ModifyOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderUpdate
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderUpdate, _Mapping]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _trading_pb2.OrderUpdate
    def __init__(self, order: _Optional[_Union[_trading_pb2.OrderUpdate, _Mapping]] = ...) -> None: ...

class GetOrderHistoryRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class OrderHistoryEntry(_message.Message):
    __slots__ = ("update", "audit_json")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_JSON_FIELD_NUMBER: _ClassVar[int]
    update: _trading_pb2.OrderUpdate
    audit_json: str
    def __init__(self, update: _Optional[_Union[_trading_pb2.OrderUpdate, _Mapping]] = ..., audit_json: _Optional[str] = ...) -> None: ...

class GetOrderHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[OrderHistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[OrderHistoryEntry, _Mapping]]] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("open_only", "strategy_tag", "limit")
    OPEN_ONLY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TAG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    open_only: bool
    strategy_tag: str
    limit: int
    def __init__(self, open_only: _Optional[bool] = ..., strategy_tag: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[_trading_pb2.OrderUpdate]
    def __init__(self, orders: _Optional[_Iterable[_Union[_trading_pb2.OrderUpdate, _Mapping]]] = ...) -> None: ...

class ListPositionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPositionsResponse(_message.Message):
    __slots__ = ("positions", "realised_pnl_paise", "unrealised_pnl_paise", "charges_paise", "as_of_sequence")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    REALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    UNREALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    CHARGES_PAISE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedCompositeFieldContainer[_trading_pb2.Position]
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    charges_paise: int
    as_of_sequence: int
    def __init__(self, positions: _Optional[_Iterable[_Union[_trading_pb2.Position, _Mapping]]] = ..., realised_pnl_paise: _Optional[int] = ..., unrealised_pnl_paise: _Optional[int] = ..., charges_paise: _Optional[int] = ..., as_of_sequence: _Optional[int] = ...) -> None: ...

class SquareOffRequest(_message.Message):
    __slots__ = ("symbol",)
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    def __init__(self, symbol: _Optional[str] = ...) -> None: ...

class SquareOffResponse(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[_trading_pb2.OrderUpdate]
    def __init__(self, orders: _Optional[_Iterable[_Union[_trading_pb2.OrderUpdate, _Mapping]]] = ...) -> None: ...

class GetFundsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFundsResponse(_message.Message):
    __slots__ = ("account", "available_paise", "margin_used_paise", "total_paise", "realised_pnl_paise", "unrealised_pnl_paise", "as_of_ns")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_PAISE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_USED_PAISE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAISE_FIELD_NUMBER: _ClassVar[int]
    REALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    UNREALISED_PNL_PAISE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_NS_FIELD_NUMBER: _ClassVar[int]
    account: str
    available_paise: int
    margin_used_paise: int
    total_paise: int
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    as_of_ns: int
    def __init__(self, account: _Optional[str] = ..., available_paise: _Optional[int] = ..., margin_used_paise: _Optional[int] = ..., total_paise: _Optional[int] = ..., realised_pnl_paise: _Optional[int] = ..., unrealised_pnl_paise: _Optional[int] = ..., as_of_ns: _Optional[int] = ...) -> None: ...
