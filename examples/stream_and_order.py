"""Example: stream a few ticks of one instrument, then place and cancel a manual limit order.

Talks to a running NeoPulse gRPC server through shared.client.NeoPulseClient.
"""

from __future__ import annotations

import argparse
import asyncio

from shared.client import NeoPulseClient
from shared.contracts import trading_pb2 as t


async def main(target: str, token: str | None, tls_ca: str | None, symbol: str, ticks: int) -> None:
    async with NeoPulseClient(target, token=token, tls_ca=tls_ca) as client:
        instruments = {i.symbol.upper(): i for i in await client.list_instruments()}
        inst = instruments.get(symbol.upper())
        if inst is None:
            traded = ", ".join(sorted(instruments))
            raise SystemExit(f"--symbol {symbol} is not traded by this server; it trades {traded}")
        last_price = 0
        stream = client.stream_ticks([inst.token])
        async for tick in stream:
            last_price = tick.ltp_paise
            print(f"{inst.symbol} ltp {tick.ltp_paise / 100:.2f} volume {tick.volume}")
            ticks -= 1
            if ticks == 0:
                break
        await stream.aclose()

        # 3 % below the last price, snapped down to the tick size: it rests on the book.
        price = last_price * 97 // 100 // inst.tick_size_paise * inst.tick_size_paise
        order = await client.place_order(inst, t.SIDE_BUY, inst.lot_size or 1, price_paise=price)
        print(f"placed {order.internal_id}: {t.OrderStatus.Name(order.status)} at {price / 100:.2f}")
        cancelled = await client.cancel_order(order.internal_id)
        print(f"cancelled {cancelled.internal_id}: {t.OrderStatus.Name(cancelled.status)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--token", help="bearer token when the server has [grpc].auth_token")
    parser.add_argument("--tls-ca", help="CA certificate (PEM) when the server uses TLS")
    parser.add_argument("--symbol", default="RELIANCE-EQ")
    parser.add_argument("--ticks", type=int, default=5, help="ticks to print before the order (at least 1)")
    args = parser.parse_args()
    if args.ticks < 1:
        parser.error("--ticks must be at least 1 (the order is priced off the last tick)")
    asyncio.run(main(args.target, args.token, args.tls_ca, args.symbol, args.ticks))
