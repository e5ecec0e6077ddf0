"""message_dict renders every message exactly as json_format.MessageToDict(preserving_proto_field_name=True) does:
every contract message with every field set at random, and a test type with what the contracts lack (64-bit and
unsigned integers, floats, bytes, closed and open enums, maps with int/bool/message values, well-known types)."""

from __future__ import annotations

import math
import random

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from shared.contracts import (
    ingestion_pb2,
    market_pb2,
    notifier_pb2,
    oms_pb2,
    ops_pb2,
    risk_pb2,
    strategy_pb2,
    trading_pb2,
)
from shared.db import protojson
from shared.db.protojson import message_dict

MODULES = (ingestion_pb2, market_pb2, notifier_pb2, oms_pb2, ops_pb2, risk_pb2, strategy_pb2, trading_pb2)
CONTRACT_TYPES = sorted({getattr(m, name) for m in MODULES for name in m.DESCRIPTOR.message_types_by_name},
                        key=lambda c: c.DESCRIPTOR.full_name)
TEXT = ["", "RELIANCE-EQ", "a<b>&\"quote\"", "NUL\x00inside", "₹ 1,29,000", "x" * 300]
FLOATS = [0.0, -0.0, 1.5, 1e300, -2.5e-300, 0.1, math.inf, -math.inf, math.nan, 3.4028234663852886e38]


def fill(msg: Message, rnd: random.Random, depth: int = 0) -> Message:
    """Every field of `msg` set to a random value (sometimes left unset), nested messages to depth 3."""
    for field in msg.DESCRIPTOR.fields:
        if rnd.random() < 0.2 or (field.message_type is not None and depth >= 3):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            container = getattr(msg, field.name)
            for _ in range(rnd.randint(0, 3)):
                key = value_of(field.message_type.fields_by_name["key"], rnd)
                vf = field.message_type.fields_by_name["value"]
                if vf.message_type is not None:
                    fill(container[key], rnd, depth + 1)
                else:
                    container[key] = value_of(vf, rnd)
        elif field.is_repeated:
            container = getattr(msg, field.name)
            for _ in range(rnd.randint(0, 3)):
                if field.message_type is not None:
                    fill(container.add(), rnd, depth + 1)
                else:
                    container.append(value_of(field, rnd))
        elif field.message_type is not None:
            sub = getattr(msg, field.name)
            if field.message_type.full_name.startswith("google.protobuf."):
                set_well_known(sub, rnd)
            else:
                fill(sub, rnd, depth + 1)
                sub.SetInParent()
        else:
            setattr(msg, field.name, value_of(field, rnd))
    return msg


def value_of(field, rnd: random.Random):
    t = field.type
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return rnd.choice([0, 1, -1, 2**63 - 1, -(2**63), 1_764_049_500_000_000_000, rnd.randint(-10**12, 10**12)])
    if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return rnd.choice([0, 1, 2**64 - 1, rnd.randint(0, 10**15)])
    if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return rnd.choice([0, 1, -1, 2**31 - 1, -(2**31), rnd.randint(-1000, 1000)])
    if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return rnd.choice([0, 2**32 - 1, rnd.randint(0, 1000)])
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return rnd.choice(FLOATS)
    if t == F.TYPE_BOOL:
        return rnd.random() < 0.5
    if t == F.TYPE_STRING:
        return rnd.choice(TEXT)
    if t == F.TYPE_BYTES:
        return bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 9)))
    if t == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        if not field.enum_type.is_closed and rnd.random() < 0.2:
            return 977  # an open enum keeps a number it has no name for
        return rnd.choice(numbers)
    raise AssertionError(f"no value for {field.full_name}")


def set_well_known(sub: Message, rnd: random.Random) -> None:
    name = sub.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        sub.seconds, sub.nanos = rnd.randint(0, 2_000_000_000), rnd.choice([0, 5, 123_000_000])
    elif name == "google.protobuf.Struct":
        sub.update({"a": 1.5, "b": [True, None, "x"], "c": {"d": "e"}})
    elif name == "google.protobuf.Int64Value":
        sub.value = rnd.choice([0, 7, -(2**63)])
    elif name == "google.protobuf.Any":
        sub.Pack(trading_pb2.Signal(signal_id="s-1", quantity=3))


def made_up_types() -> tuple[type[Message], type[Message]]:
    """A proto3 message with what the contracts lack, and a proto2 (closed) enum."""
    pool = descriptor_pool.DescriptorPool()
    for wkt in (timestamp_pb2, struct_pb2, wrappers_pb2, any_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        wkt.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    closed = descriptor_pb2.FileDescriptorProto(name="closed.proto", package="t", syntax="proto2")
    closed.enum_type.add(name="Closed").value.extend([
        descriptor_pb2.EnumValueDescriptorProto(name="C_ZERO", number=0),
        descriptor_pb2.EnumValueDescriptorProto(name="C_ONE", number=1)])
    pool.Add(closed)
    f = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3", dependency=[
        "google/protobuf/timestamp.proto", "google/protobuf/struct.proto", "google/protobuf/wrappers.proto",
        "google/protobuf/any.proto"])
    f.enum_type.add(name="Open").value.extend([descriptor_pb2.EnumValueDescriptorProto(name="O_ZERO", number=0),
                                               descriptor_pb2.EnumValueDescriptorProto(name="O_ONE", number=1)])
    m = f.message_type.add(name="All")
    label, rep = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    scalars = [("i32", F.TYPE_INT32), ("i64", F.TYPE_INT64), ("u32", F.TYPE_UINT32), ("u64", F.TYPE_UINT64),
               ("s64", F.TYPE_SINT64), ("f64", F.TYPE_FIXED64), ("sf32", F.TYPE_SFIXED32), ("fl", F.TYPE_FLOAT),
               ("db", F.TYPE_DOUBLE), ("b", F.TYPE_BOOL), ("s", F.TYPE_STRING), ("by", F.TYPE_BYTES)]
    n = 0
    for name, typ in scalars:
        for lab, suffix in ((label, ""), (rep, "_list")):
            n += 1
            m.field.add(name=name + suffix, number=n, type=typ, label=lab)
    for name, type_name in (("open", ".t.Open"), ("ts", ".google.protobuf.Timestamp"),
                            ("st", ".google.protobuf.Struct"), ("w64", ".google.protobuf.Int64Value"),
                            ("any", ".google.protobuf.Any"), ("child", ".t.All")):
        n += 1
        kind = F.TYPE_ENUM if name == "open" else F.TYPE_MESSAGE
        m.field.add(name=name, number=n, type=kind, type_name=type_name, label=label)
    n += 1
    m.field.add(name="children", number=n, type=F.TYPE_MESSAGE, type_name=".t.All", label=rep)
    for key, (ktype, vtype, vname) in {"by_int": (F.TYPE_INT64, F.TYPE_STRING, ""),
                                       "by_bool": (F.TYPE_BOOL, F.TYPE_INT64, ""),
                                       "by_name": (F.TYPE_STRING, F.TYPE_MESSAGE, ".t.All"),
                                       "enums": (F.TYPE_UINT32, F.TYPE_ENUM, ".t.Open")}.items():
        entry = m.nested_type.add(name=key.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=ktype, label=label)
        entry.field.add(name="value", number=2, type=vtype, type_name=vname or None, label=label)
        n += 1
        m.field.add(name=key, number=n, type=F.TYPE_MESSAGE, type_name=f".t.All.{entry.name}", label=rep)
    pool.Add(f)
    p2 = descriptor_pb2.FileDescriptorProto(name="t2.proto", package="t", syntax="proto2", dependency=["closed.proto"])
    holder = p2.message_type.add(name="Holder")
    holder.field.add(name="closed", number=1, type=F.TYPE_ENUM, type_name=".t.Closed", label=label)
    holder.field.add(name="count", number=2, type=F.TYPE_INT64, label=label)
    pool.Add(p2)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("t.All")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Holder")))


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("cls", CONTRACT_TYPES, ids=lambda c: c.DESCRIPTOR.name)
def test_every_contract_message_renders_as_json_format_renders_it(cls):
    rnd = random.Random(cls.DESCRIPTOR.full_name)
    for _ in range(40):
        msg = fill(cls(), rnd)
        assert same(protojson._fast(msg), MessageToDict(msg, preserving_proto_field_name=True)), msg


def test_the_types_the_contracts_lack_render_as_json_format_renders_them():
    every, holder = made_up_types()
    rnd = random.Random(7)
    for _ in range(300):
        msg = fill(every(), rnd)
        assert same(protojson._fast(msg), MessageToDict(msg, preserving_proto_field_name=True)), msg
    assert message_dict(holder(closed=1, count=5)) == {"closed": "C_ONE", "count": "5"}
    unknown = holder.FromString(holder(count=5).SerializeToString() + b"\x08\x09")  # closed: 9 kept as unknown
    assert message_dict(unknown) == MessageToDict(unknown, preserving_proto_field_name=True) == {"count": "5"}
    assert message_dict(every()) == {}


def test_an_order_update_as_the_ledger_stores_it():
    u = trading_pb2.OrderUpdate(internal_id="i-1", status=trading_pb2.ORDER_STATUS_OPEN, filled_quantity=0,
                                sequence=1_795_679_813_237_793,
                                request=trading_pb2.OrderRequest(token=2885, side=trading_pb2.SIDE_BUY, quantity=3))
    assert message_dict(u) == {"internal_id": "i-1", "status": "ORDER_STATUS_OPEN", "sequence": "1795679813237793",
                               "request": {"token": "2885", "side": "SIDE_BUY", "quantity": "3"}}
