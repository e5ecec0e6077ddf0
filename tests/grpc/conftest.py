"""Fixtures for the gRPC tests: a real Bus with simple handlers behind a real GrpcServer, and grpcurl.

grpcurl runs as a subprocess without blocking the event loop the server lives on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import rpc
from shared.bus import Bus
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput, NotFound, NotSent, OrderStateError, TradingHalted
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from tests.helpers import eventually

GRPCURL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl")
KNOWN_ORDER = "ORD-1"


@dataclass
class Grpcurl:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


async def grpcurl(*args: str, limit_s: float = 20.0) -> Grpcurl:
    proc = await asyncio.create_subprocess_exec(GRPCURL, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    return Grpcurl(proc.returncode or 0, out.decode(), err.decode())


async def wait_for(predicate, limit_s: float = 10.0) -> None:
    await eventually(predicate, limit_s)


def register_test_handlers(bus: Bus) -> None:
    """Tiny stand-ins for the modules' request handlers, each with one behaviour the tests need."""

    async def list_instruments(req):
        return ingestion_pb2.ListInstrumentsResponse(instruments=[
            market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=5)])

    async def get_order(req):
        if not req.order_id:
            raise InvalidInput("order_id", "is empty; pass the internal_id from ListOrders")
        if req.order_id != KNOWN_ORDER:
            raise NotFound(f"order {req.order_id} does not exist; list orders with ListOrders")
        return oms_pb2.GetOrderResponse(order=trading_pb2.OrderUpdate(internal_id=KNOWN_ORDER))

    async def place_order(req):
        raise TradingHalted("KILL_SWITCH", "trading is halted by the kill switch; release it with SetKillSwitch")

    async def cancel_order(req):
        raise RuntimeError("secret detail from /srv/neopulse/services/oms/ledger.py line 42")

    async def modify_order(req):
        if req.order_id == KNOWN_ORDER:
            raise OrderStateError(f"order {KNOWN_ORDER} is already TRADED; there is nothing to change")
        raise NotSent("the session expired and could not be renewed; the change was not sent")

    async def set_kill_switch(req):
        state = risk_pb2.TRADING_STATE_HALTED if req.engaged else risk_pb2.TRADING_STATE_ACTIVE
        return risk_pb2.SetKillSwitchResponse(state=state)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.GET_ORDER, get_order)
    bus.handle(rpc.PLACE_ORDER, place_order)
    bus.handle(rpc.CANCEL_ORDER, cancel_order)
    bus.handle(rpc.MODIFY_ORDER, modify_order)
    bus.handle(rpc.SET_KILL_SWITCH, set_kill_switch)


@pytest.fixture(scope="session")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed (cert, key) for 127.0.0.1 and localhost, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def bus():
    bus = Bus()
    task = asyncio.create_task(bus.run())
    yield bus
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def start_server(bus: Bus, settings: GrpcSettings | None = None, ready: bool = True) -> GrpcServer:
    server = GrpcServer(bus, list(rpc.DESCRIPTORS), settings or GrpcSettings())
    await server.start()
    if ready:
        server.set_all_serving()
    return server


@pytest.fixture
async def server(bus):
    register_test_handlers(bus)
    server = await start_server(bus)
    yield server
    await server.stop(0.5)


@pytest.fixture
def addr(server) -> str:
    return f"127.0.0.1:{server.bound_port}"


def write_protoset(path: Path, *pb2_modules) -> str:
    """A FileDescriptorSet for grpcurl -protoset, so calls work without (token-protected) reflection."""
    from google.protobuf import descriptor_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd) -> None:
        for dep in fd.dependencies:
            add(dep)
        if fd.name not in files:
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            files[fd.name] = proto

    for module in pb2_modules:
        add(module.DESCRIPTOR)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
    return str(path)
