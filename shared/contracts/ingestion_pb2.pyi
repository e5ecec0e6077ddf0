from shared.contracts import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamTicksRequest(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class ListInstrumentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInstrumentsResponse(_message.Message):
    __slots__ = ("instruments",)
    INSTRUMENTS_FIELD_NUMBER: _ClassVar[int]
    instruments: _containers.RepeatedCompositeFieldContainer[_market_pb2.Instrument]
    def __init__(self, instruments: _Optional[_Iterable[_Union[_market_pb2.Instrument, _Mapping]]] = ...) -> None: ...

class GetFeedStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFeedStatusResponse(_message.Message):
    __slots__ = ("source", "connected", "ticks_total", "ticks_per_second", "last_tick_ns", "reconnects", "malformed_packets", "dropped_ticks")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TICKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TICKS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_NS_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_PACKETS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TICKS_FIELD_NUMBER: _ClassVar[int]
    source: str
    connected: bool
    ticks_total: int
    ticks_per_second: float
    last_tick_ns: int
    reconnects: int
    malformed_packets: int
    dropped_ticks: int
    def __init__(self, source: _Optional[str] = ..., connected: _Optional[bool] = ..., ticks_total: _Optional[int] = ..., ticks_per_second: _Optional[float] = ..., last_tick_ns: _Optional[int] = ..., reconnects: _Optional[int] = ..., malformed_packets: _Optional[int] = ..., dropped_ticks: _Optional[int] = ...) -> None: ...
