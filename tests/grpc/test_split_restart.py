"""A bridge coming back to an upstream that restarted without ending its stream cleanly, or connecting first from a
resume point of its own records (the OMS: its ledger) to an upstream that restarted since: it reports a loss when
the upstream's earlier process got past that point (the upstream keeps a record: the OMS's ledger, risk's clean
stop), nothing when it did not, and says a loss cannot be ruled out when the upstream keeps no record."""

from __future__ import annotations

import asyncio
from typing import Any

from shared import rpc
from shared.bus import Bus, Topic
from shared.contracts import ops_pb2, risk_pb2, trading_pb2
from shared.grpc.bridge import Backoff, StreamBridge, open_channel
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from tests.grpc.bridge_rig import Proxy
from tests.grpc.conftest import wait_for

UPDATES = rpc.method("OrderService", "StreamOrderUpdates")
DECISIONS = rpc.method("RiskService", "StreamDecisions")
SERVICE = {UPDATES: "OrderService", DECISIONS: "RiskService"}


def update(seq: int) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq)


def decision(seq: int) -> trading_pb2.RiskDecision:
    return trading_pb2.RiskDecision(accepted=True, sequence=seq)


class Restarting:
    """One bridge into a local bus from an upstream process (bus + GrpcServer) behind a proxy; the upstream can
    crash and come back as a new process. What the bridge publishes and the notifications are collected."""

    def __init__(self, method: str) -> None:
        self.method, self.topic = method, rpc.STREAM_TOPICS[method]
        self.local, self.proxy = Bus(), Proxy()
        self.seen: list[int] = []
        self.notes: list[ops_pb2.Notification] = []
        self.tasks: list[asyncio.Task[None]] = [asyncio.create_task(self.local.run())]
        self.upstream: tuple[Bus, GrpcServer] | None = None

    async def start(self, last_sequence: int = 0, previous: dict[str, int] | None = None, started_at: int = 0,
                    request: Any | None = None, unknown_below: int = 0, made: tuple[Any, ...] = ()) -> None:
        """The upstream (declaring `previous`, `unknown_below` and `started_at`; having published `made`), then the
        bridge with `request`, resuming after `last_sequence` (0: live)."""
        self.local.subscribe(self.topic, "consumer", self._collect)
        self.local.subscribe(Topic.NOTIFICATIONS, "notes", self._note)
        await self.proxy.start()
        await self.start_upstream(previous, started_at, unknown_below)
        await self.publish(*made)
        assert self.upstream is not None
        await self.upstream[0].drain()  # in its hub's ring
        self.channel = open_channel(f"127.0.0.1:{self.proxy.port}", GrpcSettings())
        self.bridge = StreamBridge(self.local, self.channel, self.method, request, backoff=Backoff(0.05, 0.1))
        self.bridge.last_sequence = last_sequence
        self.tasks.append(asyncio.create_task(self.bridge.run()))
        await self.attached()

    async def start_upstream(self, previous: dict[str, int] | None = None, started_at: int = 0,
                             unknown_below: int = 0) -> None:
        bus = Bus()
        self.tasks.append(asyncio.create_task(bus.run()))
        server = GrpcServer(bus, [SERVICE[self.method]], GrpcSettings())
        hub = server.hubs[self.method]  # what split.py declares before the server starts
        hub.previous, hub.started_at, hub.unknown_below = previous, started_at, unknown_below
        self.proxy.target_port = await server.start()
        server.set_all_serving()
        self.upstream = (bus, server)

    async def attached(self) -> None:
        assert self.upstream is not None
        hub = self.upstream[1].hubs[self.method]
        await wait_for(lambda: hub.listener_count == 1)

    async def publish(self, *msgs: Any) -> None:
        assert self.upstream is not None
        for msg in msgs:
            await self.upstream[0].publish(self.topic, msg)

    async def crash_and_restart(self, previous: dict[str, int] | None) -> None:
        """The upstream dies without ending the stream; a new process comes back declaring `previous`."""
        assert self.upstream is not None
        self.proxy.refusing = True
        self.proxy.cut()
        await self.upstream[1].stop(0)
        await self.start_upstream(previous)
        self.proxy.refusing = False
        await self.attached()

    async def stop_and_restart(self, previous: dict[str, int] | None, unknown_below: int = 0) -> None:
        """The upstream stops cleanly (every stream ends after it had all), and a new process comes back
        declaring `previous` and `unknown_below`."""
        assert self.upstream is not None
        await self.upstream[1].stop(1.0)
        await self.start_upstream(previous, unknown_below=unknown_below)
        await self.attached()

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream[1].stop(0)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if hasattr(self, "channel"):
            await self.channel.close()
        await self.proxy.stop()

    async def _collect(self, msg: Any) -> None:
        self.seen.append(msg.sequence)

    async def _note(self, note: ops_pb2.Notification) -> None:
        self.notes.append(note)


async def test_a_bridge_that_had_everything_a_crashed_oms_recorded_reports_nothing_lost():
    """After every crash of the OMS, its order-update bridges reported 'Order-path messages lost' though they had
    received every update it recorded: the new OMS's ring did not reach back, and nothing said how far the old got."""
    rig = Restarting(UPDATES)
    try:
        await rig.start()
        await rig.publish(update(1), update(2), update(3))
        await wait_for(lambda: rig.seen == [1, 2, 3])

        await rig.crash_and_restart(previous={"all": 3})  # its ledger: up to 3
        await rig.publish(update(10))
        await wait_for(lambda: rig.seen == [1, 2, 3, 10])
    finally:
        await rig.close()

    assert rig.notes == [] and rig.bridge.gaps == 0


async def test_a_bridge_missing_what_a_crashed_oms_recorded_reports_the_loss():
    rig = Restarting(UPDATES)
    try:
        await rig.start()
        await rig.publish(update(1), update(2))
        await wait_for(lambda: rig.seen == [1, 2])

        await rig.crash_and_restart(previous={"all": 3})  # 3 was recorded, never sent to us
        await rig.publish(update(10))
        await wait_for(lambda: rig.seen == [1, 2, 10])
    finally:
        await rig.close()

    assert rig.bridge.gaps == 1
    note = rig.notes[0]
    assert (note.severity, note.title, note.fields["after_sequence"], note.fields["cause"]) == (
        ops_pb2.SEVERITY_CRITICAL, "Order-path messages lost between processes", "2", "restarted")
    assert "got to sequence 3" in note.text


async def test_a_bridge_back_from_a_crashed_upstream_without_a_record_says_a_loss_cannot_be_ruled_out():
    rig = Restarting(DECISIONS)  # risk's sequences are not durable
    try:
        await rig.start()
        await rig.publish(decision(1))
        await wait_for(lambda: rig.seen == [1])

        await rig.crash_and_restart(previous=None)
        await rig.publish(decision(10))
        await wait_for(lambda: rig.seen == [1, 10])
    finally:
        await rig.close()

    assert rig.bridge.gaps == 1
    note = rig.notes[0]
    assert (note.severity, note.title, note.fields["after_sequence"], note.fields["cause"]) == (
        ops_pb2.SEVERITY_CRITICAL, "Order-path messages may have been lost between processes", "1", "unrecorded")
    assert "cannot be ruled out" in note.text


# The OMS starts, resuming risk's accepted decisions after the last one in its ledger (4); the risk it reaches started
# at 100, so it did not make 4: its predecessor did, and what that one made after 4 is not in this one's ring.
ACCEPTED_ONLY = risk_pb2.StreamDecisionsRequest(accepted_only=True)


async def test_an_oms_resuming_from_its_ledger_is_told_when_the_risk_before_a_restart_accepted_more():
    """Risk accepted decision 5 while the OMS was down, then restarted: the OMS, resuming after 4 from its ledger,
    connected to the new risk, got nothing, and nothing said so. The order was never placed."""
    rig = Restarting(DECISIONS)
    try:
        await rig.start(last_sequence=4, started_at=100, request=ACCEPTED_ONLY,
                        previous={"all": 6, "accepted": 5, "rejections": 6})
        await rig.publish(decision(101))
        await wait_for(lambda: rig.seen == [101])
    finally:
        await rig.close()

    assert rig.bridge.gaps == 1
    note = rig.notes[0]
    assert (note.title, note.fields["after_sequence"], note.fields["cause"]) == (
        "Order-path messages lost between processes", "4", "restarted")
    assert "got to sequence 5" in note.text


async def test_an_oms_resuming_from_its_ledger_after_risk_restarted_cleanly_with_nothing_more_reports_nothing():
    """Risk's last decisions before its stop were rejections (6): nothing the OMS takes."""
    rig = Restarting(DECISIONS)
    try:
        await rig.start(last_sequence=4, started_at=100, request=ACCEPTED_ONLY,
                        previous={"all": 6, "accepted": 4, "rejections": 6})
        await rig.publish(decision(101))
        await wait_for(lambda: rig.seen == [101])
    finally:
        await rig.close()

    assert rig.notes == [] and rig.bridge.gaps == 0


async def test_an_oms_resuming_from_its_ledger_after_risk_crashed_says_a_loss_cannot_be_ruled_out():
    rig = Restarting(DECISIONS)
    try:
        await rig.start(last_sequence=4, started_at=100, request=ACCEPTED_ONLY, previous=None)
        await rig.publish(decision(101))
        await wait_for(lambda: rig.seen == [101])
    finally:
        await rig.close()

    assert [(n.fields["after_sequence"], n.fields["cause"]) for n in rig.notes] == [("4", "unrecorded")]


async def test_an_oms_resuming_from_before_a_risk_crash_is_told_a_loss_cannot_be_ruled_out_after_a_clean_stop():
    """Risk crashed (a process before 50), then one started at 50 and stopped cleanly: its record cannot say what
    the crashed one published after 4."""
    rig = Restarting(DECISIONS)
    try:
        await rig.start(last_sequence=4, started_at=100, request=ACCEPTED_ONLY, unknown_below=50,
                        previous={"all": 60, "accepted": 4, "rejections": 60})
        await rig.publish(decision(101))
        await wait_for(lambda: rig.seen == [101])
    finally:
        await rig.close()

    assert [(n.fields["after_sequence"], n.fields["cause"]) for n in rig.notes] == [("4", "unrecorded")]


async def test_an_oms_resuming_from_its_ledger_to_the_same_risk_process_reports_nothing():
    rig = Restarting(DECISIONS)
    try:
        await rig.start(last_sequence=4, started_at=1, request=ACCEPTED_ONLY, previous=None,
                        made=tuple(decision(n) for n in range(2, 5)))  # it made 4, the last one in the ledger
        await rig.publish(decision(5))
        await wait_for(lambda: rig.seen == [5])
    finally:
        await rig.close()

    assert rig.notes == [] and rig.bridge.gaps == 0


async def _away_while_a_process_came_and_went(previous: dict[str, int], unknown_below: int = 0) -> Restarting:
    """Risk stops cleanly after decisions 1 and 2 reached the bridge; the next process declares `previous` and
    `unknown_below`."""
    rig = Restarting(DECISIONS)
    try:
        await rig.start()
        await rig.publish(decision(1), decision(2))
        await wait_for(lambda: rig.seen == [1, 2])
        await rig.stop_and_restart(previous=previous, unknown_below=unknown_below)
        await rig.publish(decision(10))
        await wait_for(lambda: rig.seen == [1, 2, 10])
    finally:
        await rig.close()
    return rig


async def test_a_process_that_published_between_two_clean_restarts_while_the_bridge_was_away_is_reported():
    """Risk stopped cleanly, and a process started, accepted decision 3 and stopped while the OMS's bridge was away:
    the one it then reached said its earlier processes got to 3, and nothing was reported until the OMS restarted."""
    rig = await _away_while_a_process_came_and_went({"all": 3, "accepted": 3, "rejections": 0})

    assert rig.bridge.gaps == 1
    note = rig.notes[0]
    assert (note.title, note.fields["after_sequence"], note.fields["cause"]) == (
        "Order-path messages lost between processes", "2", "restarted")
    assert "got to sequence 3" in note.text


async def test_a_clean_restart_whose_record_ends_where_the_stream_did_reports_nothing():
    rig = await _away_while_a_process_came_and_went({"all": 2, "accepted": 2, "rejections": 0})

    assert rig.notes == [] and rig.bridge.gaps == 0


async def test_a_process_that_crashed_between_two_clean_restarts_while_the_bridge_was_away_may_have_lost_some():
    """As above, but the process between crashed: the next one's record says nothing after 50, where it started."""
    rig = await _away_while_a_process_came_and_went({"all": 2, "accepted": 2, "rejections": 0}, unknown_below=50)

    assert rig.bridge.gaps == 1
    note = rig.notes[0]
    assert (note.title, note.fields["after_sequence"], note.fields["cause"]) == (
        "Order-path messages may have been lost between processes", "2", "unrecorded")


async def test_a_record_unknown_only_below_the_resume_point_reports_nothing_after_a_clean_restart():
    rig = await _away_while_a_process_came_and_went({"all": 2, "accepted": 2, "rejections": 0}, unknown_below=1)

    assert rig.notes == [] and rig.bridge.gaps == 0
