"""Split-mode benchmark: modules in separate processes joined by the gRPC bridges, beside baselines.

Ticks/s ingestion -> strategy vs a bare gRPC stream of the same batches; tick-to-order p99 at 20k ticks/s.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from typing import Any

from bench.pipeline import BATCH, PacedSource, _toml, make_batches, pct, timed_broker
from shared import rpc, runtime
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import ingestion_pb2
from shared.grpc.bridge import StreamBridge, install_unary_proxy, method_types, open_channel
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from shared.ports import free_loopback_port as free_port

STREAM_TICKS = rpc.method("IngestionService", "StreamTicks")
SETTINGS = GrpcSettings(replay_size=100_000)


class GatedSource(PacedSource):
    """PacedSource that starts playing when the benchmark says go (every consumer connected)."""

    def __init__(self, batches: list, clock: ManualClock, bus: Bus, rate: float | None, go: Any) -> None:
        super().__init__(batches, clock, bus, rate)
        self.go = go

    async def batches(self):
        await asyncio.to_thread(self.go.wait)
        async for batch in super().batches():
            yield batch


def _module(name: str, bus: Bus, clock: ManualClock, source: Any = None, broker: Any = None) -> Any:
    from services.ingestion.config import IngestionSettings
    from services.ingestion.module import IngestionModule
    from services.oms.config import OmsSettings
    from services.oms.ledger import MemoryLedger
    from services.oms.module import OmsModule
    from services.risk.config import RiskSettings
    from services.risk.module import RiskModule
    from services.strategy.config import StrategySettings
    from services.strategy.module import StrategyModule
    from shared import config as cfg

    toml = _toml()
    if name == "ingestion":
        return IngestionModule(bus, IngestionSettings(stall_seconds=3600), source, clock)
    if name == "strategy":
        return StrategyModule(bus, cfg.load(StrategySettings, toml), clock)
    if name == "risk":
        return RiskModule(bus, cfg.load(RiskSettings, toml), clock)
    return OmsModule(bus, cfg.load(OmsSettings, toml), broker, MemoryLedger(), clock)


async def _worker_main(name: str, ports: dict[str, int], rate: float | None, n_ticks: int, go: Any, stop: Any,
                       out: Any) -> None:
    """One module in this process; only bridges to modules that run (`ports`) are made."""
    from services.app.split import NEEDS, SERVICE_OF, owner

    batches, start = make_batches(n_ticks if name == "ingestion" else BATCH, seconds_per_batch=2.0, vol_bps=12.0)
    bus, clock = Bus(default_maxsize=100_000), ManualClock(start)
    broker = timed_broker(clock) if name == "oms" else None
    source = GatedSource(batches, clock, bus, rate, go) if name == "ingestion" else None
    server = GrpcServer(bus, [SERVICE_OF[name]], SETTINGS, port=ports[name])
    channels = {m: open_channel(f"127.0.0.1:{p}", SETTINGS) for m, p in ports.items() if m != name}
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(bus.run())]
        await server.start()
        for method in NEEDS[name].requests:
            if owner(method) in ports:
                install_unary_proxy(bus, channels[owner(method)], method)
        bridges = [StreamBridge(bus, channels[owner(m)], m, method_types(m)[0](**f))
                   for m, f in NEEDS[name].streams if owner(m) in ports]
        tasks += [tg.create_task(b.run()) for b in bridges]
        if name != "ingestion":
            await _wait_instruments(bus)
        module = _module(name, bus, clock, source, broker)
        await module.start()
        runtime.settle_after_start()  # as `neopulse serve` does
        tasks.append(tg.create_task(module.run()))
        server.set_all_serving()
        for bridge in bridges:
            await bridge.connected.wait()
        out.put((name, "ready", None))
        watch = tg.create_task(_watch_handled(bus, name)) if name == "strategy" else None
        tasks.append(watch)
        if name == "ingestion":
            await source.done.wait()
            out.put((name, "done", None))
        await asyncio.to_thread(stop.wait)
        out.put((name, "latencies", broker.latencies if broker is not None else []))
        if watch is not None:
            out.put((name, "handled", _handled[0:3]))
        await server.stop(0)
        for task in tasks:
            task.cancel()


_handled = [0, 0, 0]  # strategy: ticks handled, first and last handle time (perf_counter ns)


async def _watch_handled(bus: Bus, name: str) -> None:
    """When the strategy's own tick subscription finished each batch (what it really processed)."""
    sub = next(s for s in bus.subscriptions() if s.topic is Topic.TICKS and s.name == name)
    seen = 0
    while True:
        await asyncio.sleep(0.0005)
        if sub.handled != seen:
            now = time.perf_counter_ns()
            if not seen:
                _handled[1] = now
            seen, _handled[0], _handled[2] = sub.handled, sub.handled, now


async def _wait_instruments(bus: Bus) -> None:
    while True:
        try:
            await bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
            return
        except Exception:
            await asyncio.sleep(0.1)


def _worker(*args: Any) -> None:
    import contextlib

    from bench.run import quiet_production_logs

    quiet_production_logs()  # as `neopulse serve` logs; start-up reconnect warnings are expected here
    with contextlib.suppress(BaseException):
        asyncio.run(_worker_main(*args))




def _run_modules(names: tuple[str, ...], rate: float | None, n_ticks: int) -> dict[tuple[str, str], Any]:
    """Start `names` as processes (ingestion first), play the ticks once everyone is connected."""
    ctx = mp.get_context("spawn")
    ports = {n: free_port() for n in names}
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(n, ports, rate, n_ticks, go, stop, out), daemon=True) for n in names]
    try:
        procs[0].start()
        _expect(out, {("ingestion", "ready")}, 60)
        for p in procs[1:]:
            p.start()
        _expect(out, {(n, "ready") for n in names[1:]}, 120)
        go.set()
        _expect(out, {("ingestion", "done")}, 300)
        time.sleep(1.0)  # let the tail through the chain
        stop.set()
        wanted = {(n, "latencies") for n in names} | ({("strategy", "handled")} if "strategy" in names else set())
        return _expect(out, wanted, 30)
    finally:  # also after a failed start: the workers started are told to stop, the others never ran
        stop.set()
        for p in procs:
            if p.pid is None:
                continue
            p.join(10)
            if p.is_alive():
                p.kill()


def _tick_to_order(seconds: float, rate: float) -> dict[str, Any]:
    """ingestion, strategy, risk and oms in four processes; p50/p99 tick receive -> order booked."""
    got = _run_modules(("ingestion", "strategy", "risk", "oms"), rate, int(rate * seconds))
    lat = got[("oms", "latencies")]
    return {"orders": len(lat), "p50_us": pct(lat, 0.50), "p99_us": pct(lat, 0.99), "offered_ticks_per_s": rate,
            "ticks_per_batch": BATCH}


def _split_throughput(n_ticks: int) -> dict[str, Any]:
    """Ingestion -> strategy across two processes, as fast as the chain goes."""
    got = _run_modules(("ingestion", "strategy"), None, n_ticks)
    batches, first_ns, last_ns = got[("strategy", "handled")]
    ticks = (batches - 1) * BATCH  # ticks handled after the first batch, over the time measured
    seconds = max(1e-9, (last_ns - first_ns) / 1e9)
    return {"ticks": ticks, "offered": n_ticks, "seconds": seconds, "ticks_per_s": ticks / seconds}


def _expect(out: Any, wanted: set[tuple[str, str]], timeout_s: float) -> dict[tuple[str, str], Any]:
    got: dict[tuple[str, str], Any] = {}
    deadline = time.monotonic() + timeout_s
    while not wanted <= set(got):
        name, kind, value = out.get(timeout=max(0.1, deadline - time.monotonic()))
        got[(name, kind)] = value
    return got


async def _bare_server_main(port: int, n_ticks: int, ready: Any, stop: Any, rate: float | None = None) -> None:
    """The same pre-built TickBatches on a plain grpc.aio server: no bus, no hub, no filters.

    With `rate`, batches are paced like the split run's source and stamped (recv_ns) as they are sent."""
    import grpc

    from bench.pipeline import pace_until

    batches, _ = make_batches(n_ticks, seconds_per_batch=2.0, vol_bps=12.0)
    req_cls, resp_cls = method_types(STREAM_TICKS)
    runtime.settle_after_start()

    async def stream(request: Any, context: Any):
        next_at = time.perf_counter()
        for batch in batches:
            if rate:
                next_at += len(batch.ticks) / rate
                await pace_until(next_at)
                batch.ticks[0].recv_ns = time.time_ns()
            yield batch

    handler = grpc.unary_stream_rpc_method_handler(stream, request_deserializer=req_cls.FromString,
                                                   response_serializer=resp_cls.SerializeToString)
    server = grpc.aio.server(options=SETTINGS.server_options())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "neopulse.v1.IngestionService", {"StreamTicks": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.set()
    await asyncio.to_thread(stop.wait)
    await server.stop(0)


def _bare_server(*args: Any) -> None:
    asyncio.run(_bare_server_main(*args))


async def _bare_client(port: int, latencies: list[int]) -> tuple[int, float]:
    req_cls, _ = method_types(STREAM_TICKS)
    async with open_channel(f"127.0.0.1:{port}", SETTINGS) as channel:
        call = channel.unary_stream(STREAM_TICKS, request_serializer=req_cls.SerializeToString,
                                    response_deserializer=method_types(STREAM_TICKS)[1].FromString)
        ticks, first = 0, 0.0
        async for batch in call(req_cls()):
            if batch.ticks[0].recv_ns:
                latencies.append(time.time_ns() - batch.ticks[0].recv_ns)
            if not first:
                first = time.perf_counter()
            else:
                ticks += len(batch.ticks)
        return ticks, time.perf_counter() - first


def _bare(n_ticks: int, rate: float | None = None) -> dict[str, Any]:
    """A bare gRPC stream of the same batches, server and client in two processes: as fast as it goes, or
    paced at `rate` with each batch's latency from send to receive."""
    ctx = mp.get_context("spawn")
    port = free_port()
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_bare_server, args=(port, n_ticks, ready, stop, rate), daemon=True)
    proc.start()
    latencies: list[int] = []
    try:
        ready.wait(60)
        ticks, seconds = asyncio.run(_bare_client(port, latencies))
    finally:
        stop.set()
        proc.join(10)
    return {"ticks": ticks, "seconds": seconds, "ticks_per_s": ticks / seconds, "latencies_ns": latencies}


def run(seconds: float = 4.0) -> dict[str, Any]:
    """Split-mode numbers beside same-run baselines; `table` rows feed bench/run.py."""
    n_ticks = int(100_000 * seconds)
    bare = _bare(n_ticks)
    split = _split_throughput(n_ticks)
    # Six times as long as the throughput runs: the p99 then rests on ~700 orders, not ~100.
    bare_lat = _bare(int(20_000 * seconds), 20_000)["latencies_ns"]
    latency = _tick_to_order(6 * seconds, 20_000)
    latency.update(bare_p50_us=pct(bare_lat, 0.50), bare_p99_us=pct(bare_lat, 0.99))
    ratio = split["ticks_per_s"] / bare["ticks_per_s"]
    return {
        "throughput": {"split_ticks_per_s": split["ticks_per_s"], "bare_grpc_ticks_per_s": bare["ticks_per_s"],
                       "ratio": ratio, "ticks_delivered": split["ticks"], "ticks_offered": n_ticks},
        "latency": latency,
        "table": [
            ("split ingestion->strategy ticks/s", (f"{split['ticks_per_s']:,.0f}",
                                                   f"bare gRPC {bare['ticks_per_s']:,.0f}", f"{ratio:.3f}", "")),
            ("split tick-to-order p50 µs @20k/s", (f"{latency['p50_us']:,.0f}",
                                                   f"bare gRPC hop {latency['bare_p50_us']:,.0f}",
                                                   f"{latency['p50_us'] / latency['bare_p50_us']:.1f}x", "")),
            ("split tick-to-order p99 µs @20k/s", (f"{latency['p99_us']:,.0f}",
                                                   f"bare gRPC hop {latency['bare_p99_us']:,.0f}",
                                                   f"{latency['p99_us'] / latency['bare_p99_us']:.1f}x", "< 5,000")),
        ],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, default=str))
