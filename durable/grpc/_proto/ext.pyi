from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_APPLIED: _ClassVar[AckOutcome]
    ACK_DROPPED: _ClassVar[AckOutcome]
    ACK_REFUSED: _ClassVar[AckOutcome]
ACK_APPLIED: AckOutcome
ACK_DROPPED: AckOutcome
ACK_REFUSED: AckOutcome

class WorkerMessage(_message.Message):
    __slots__ = ("open", "completeTurn", "completeActivity", "seq")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    COMPLETETURN_FIELD_NUMBER: _ClassVar[int]
    COMPLETEACTIVITY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    open: bytes
    completeTurn: bytes
    completeActivity: bytes
    seq: int
    def __init__(self, open: _Optional[bytes] = ..., completeTurn: _Optional[bytes] = ..., completeActivity: _Optional[bytes] = ..., seq: _Optional[int] = ...) -> None: ...

class SidecarMessage(_message.Message):
    __slots__ = ("workItem", "ack", "handled")
    WORKITEM_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    workItem: bytes
    ack: Ack
    handled: int
    def __init__(self, workItem: _Optional[bytes] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., handled: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "outcome", "code", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    outcome: AckOutcome
    code: int
    message: str
    def __init__(self, seq: _Optional[int] = ..., outcome: _Optional[_Union[AckOutcome, str]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
