"""The index snapshot at start: a feed that acknowledges the snapshot at once but streams the readings a little
after request_timeout_s (a loaded feed at 09:14) is a ConfigError telling the user to fix the spelling of a
correct index name, and the start ends; start_login_wait_s (120 s) is never used to ask again. Only a feed that
sends no ack at all is retried."""
import asyncio

import pytest
from neo_api_client.websocket.feed.models import SFeedIndex
from pydantic import SecretStr

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator.server import SimCredentials
from shared import config as cfg
from shared.kotak.config import KotakSettings


class SlowFeed:
    """Acks the snapshot at once; the reading comes `delay` s later."""
    opened = 0

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._subscribe_ack_event = asyncio.Event()
        SlowFeed.opened += 1

    async def connect(self):
        pass

    async def snapshot(self, tokens, intent):
        self._subscribe_ack_event.set()

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        await asyncio.sleep(self.delay)
        yield SFeedIndex(exchange_segment="nse_cm", instrument_token="26000", name="Nifty 50", last_traded_price=1.0,
                         open_price=1, high_price=1, low_price=1, close_price=1, change=0, net_change_percent=0,
                         yearly_high=1, yearly_low=1, last_trade_time=0, precision=2, multiplier=1)

    async def close(self):
        pass


async def test_a_slow_but_answering_feed_is_asked_again_not_a_config_error():
    c = SimCredentials()
    settings = cfg.load(KotakSettings, {}, consumer_key=SecretStr(c.consumer_key), mobile=SecretStr(c.mobile),
                        ucc=c.ucc, mpin=SecretStr(c.mpin), totp_secret=SecretStr(c.totp_secret),
                        base_url="http://127.0.0.1:1", request_timeout_s=0.3, reconnect_initial_s=0.05,
                        start_login_wait_s=30.0)
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["Nifty 50"])
    delays = iter([0.5, 0.0])  # slow the first time, prompt the next
    source._socket = lambda: SlowFeed(next(delays))

    got = await source._index_instruments()  # today: ConfigError "write each as Kotak spells it"

    assert [(i.token, i.symbol) for i in got] == [(26000, "Nifty 50")]
pytestmark = pytest.mark.asyncio
