"""Protobuf classes built from a message layout, for the wire formats of other products whose
`.proto` files are not shipped in a Python package (Loki's push, Prometheus's remote write): the
layout gives each field's name, number, type and label, which is all the wire format needs."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from bytefreezer.ingress.bodies import BodyError

Field = descriptor_pb2.FieldDescriptorProto
STRING, MESSAGE, DOUBLE = Field.TYPE_STRING, Field.TYPE_MESSAGE, Field.TYPE_DOUBLE
INT32, INT64, UINT32, UINT64 = (
    Field.TYPE_INT32,
    Field.TYPE_INT64,
    Field.TYPE_UINT32,
    Field.TYPE_UINT64,
)
SINT32, SINT64 = Field.TYPE_SINT32, Field.TYPE_SINT64
OPTIONAL, REPEATED = Field.LABEL_OPTIONAL, Field.LABEL_REPEATED

# each message's fields: name, number, type, label, and the type's full name for a message
Layout = dict[str, list[tuple[str, int, int, int, str | None]]]


def message_class(package: str, layout: Layout, root: str, *dependencies: Any) -> Any:
    """The class of message ``root`` of ``layout`` in ``package`` (proto3); ``dependencies``
    are the modules (``timestamp_pb2``) of the well-known types it uses."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"bytefreezer/{package.replace('.', '_')}.proto",
        package=package,
        syntax="proto3",
        dependency=[d.DESCRIPTOR.name for d in dependencies],
    )
    for name, fields in layout.items():
        kind = file.message_type.add(name=name)
        for field, number, type_, label, type_name in fields:
            added = kind.field.add(name=field, number=number, type=type_, label=label)
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    for dependency in dependencies:
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{root}"))


def parsed(message: Any, data: bytes, what: str) -> Any:
    """``data`` parsed into a new ``message`` (a class); ``BodyError`` 400 naming ``what``."""
    found = message()
    try:
        found.ParseFromString(data)
    except DecodeError as exc:
        raise BodyError(400, f"not a {what}: {exc}") from None
    return found
