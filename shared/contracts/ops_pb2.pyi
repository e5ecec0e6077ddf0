from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class NotificationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_KIND_UNSPECIFIED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_FILL: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_REJECTION: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_RISK_BREACH: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_KILL_SWITCH: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_FEED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_SESSION: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_SYSTEM: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_DAILY_SUMMARY: _ClassVar[NotificationKind]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity
NOTIFICATION_KIND_UNSPECIFIED: NotificationKind
NOTIFICATION_KIND_FILL: NotificationKind
NOTIFICATION_KIND_REJECTION: NotificationKind
NOTIFICATION_KIND_RISK_BREACH: NotificationKind
NOTIFICATION_KIND_KILL_SWITCH: NotificationKind
NOTIFICATION_KIND_FEED: NotificationKind
NOTIFICATION_KIND_SESSION: NotificationKind
NOTIFICATION_KIND_SYSTEM: NotificationKind
NOTIFICATION_KIND_DAILY_SUMMARY: NotificationKind

class Notification(_message.Message):
    __slots__ = ("kind", "severity", "title", "text", "ts_ns", "fields", "source")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    kind: NotificationKind
    severity: Severity
    title: str
    text: str
    ts_ns: int
    fields: _containers.ScalarMap[str, str]
    source: str
    def __init__(self, kind: _Optional[_Union[NotificationKind, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., ts_ns: _Optional[int] = ..., fields: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ...) -> None: ...

class NotificationBatch(_message.Message):
    __slots__ = ("notifications",)
    NOTIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    notifications: _containers.RepeatedCompositeFieldContainer[Notification]
    def __init__(self, notifications: _Optional[_Iterable[_Union[Notification, _Mapping]]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "name", "args", "origin", "ts_ns")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    name: str
    args: _containers.RepeatedScalarFieldContainer[str]
    origin: str
    ts_ns: int
    def __init__(self, command_id: _Optional[str] = ..., name: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., origin: _Optional[str] = ..., ts_ns: _Optional[int] = ...) -> None: ...
