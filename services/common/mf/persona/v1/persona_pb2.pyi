import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReservationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATUS_UNSPECIFIED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_HELD: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_CONFIRMED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_RELEASED: _ClassVar[ReservationStatus]
RESERVATION_STATUS_UNSPECIFIED: ReservationStatus
RESERVATION_STATUS_HELD: ReservationStatus
RESERVATION_STATUS_CONFIRMED: ReservationStatus
RESERVATION_STATUS_RELEASED: ReservationStatus

class Persona(_message.Message):
    __slots__ = ("persona_id", "display_name", "attributes", "max_sessions", "reserved", "created_at", "updated_at")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    display_name: str
    attributes: _containers.ScalarMap[str, str]
    max_sessions: int
    reserved: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, persona_id: _Optional[str] = ..., display_name: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., max_sessions: _Optional[int] = ..., reserved: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPersonaRequest(_message.Message):
    __slots__ = ("persona_id",)
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    def __init__(self, persona_id: _Optional[str] = ...) -> None: ...

class ListPersonasRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPersonasResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Persona]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Persona, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReserveSlotRequest(_message.Message):
    __slots__ = ("persona_id", "session_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    session_id: str
    def __init__(self, persona_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ReleaseSlotRequest(_message.Message):
    __slots__ = ("persona_id", "session_id", "reason")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    session_id: str
    reason: str
    def __init__(self, persona_id: _Optional[str] = ..., session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("persona_id", "session_id", "status", "expires_at", "reason")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    session_id: str
    status: ReservationStatus
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, persona_id: _Optional[str] = ..., session_id: _Optional[str] = ..., status: _Optional[_Union[ReservationStatus, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...
