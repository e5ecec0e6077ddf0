from shared.contracts import ops_pb2 as _ops_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamNotificationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NotifyRequest(_message.Message):
    __slots__ = ("notification",)
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    notification: _ops_pb2.Notification
    def __init__(self, notification: _Optional[_Union[_ops_pb2.Notification, _Mapping]] = ...) -> None: ...

class NotifyResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class GetSystemStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemStatusResponse(_message.Message):
    __slots__ = ("mode", "uptime_seconds", "telegram_enabled", "notifications_sent", "notifications_failed")
    MODE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TELEGRAM_ENABLED_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATIONS_SENT_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    mode: str
    uptime_seconds: int
    telegram_enabled: bool
    notifications_sent: int
    notifications_failed: int
    def __init__(self, mode: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., telegram_enabled: _Optional[bool] = ..., notifications_sent: _Optional[int] = ..., notifications_failed: _Optional[int] = ...) -> None: ...
