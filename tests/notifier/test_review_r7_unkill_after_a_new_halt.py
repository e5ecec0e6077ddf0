"""An /unkill prompt is tied to the halt it showed, not to its wording: a halt released and engaged again after the
prompt was shown, with the same reason text (a group's /kill without a reason is always "telegram:<chat> /kill"; the
CLI's default is always "neopulse ctl halt"), is not released by the older prompt's button."""

from __future__ import annotations

from shared import rpc
from shared.bus import Topic
from shared.contracts import ops_pb2, risk_pb2
from tests.notifier.conftest import CHAT
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import press

HALTED, ACTIVE = risk_pb2.TRADING_STATE_HALTED, risk_pb2.TRADING_STATE_ACTIVE
SAME_REASON = f"kill switch engaged: telegram:{CHAT} /kill"


def kill_switch(text: str) -> ops_pb2.Notification:
    """What risk announces when the switch is engaged or released."""
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, severity=ops_pb2.SEVERITY_CRITICAL,
                                title="Kill switch", text=text, source="risk")


async def test_an_old_unkill_prompt_does_not_release_a_halt_engaged_again_with_the_same_reason(notifier, fake_api,
                                                                                             standins, bus):
    standins.state, standins.state_reason = HALTED, SAME_REASON
    await ask(fake_api, "/unkill")  # one member asks; meanwhile another releases and halts again by /kill
    standins.state, standins.state_reason = ACTIVE, "kill switch released: telegram:4242 /unkill"
    await bus.publish(Topic.NOTIFICATIONS, kill_switch("kill switch released"))
    standins.state, standins.state_reason = HALTED, SAME_REASON
    await bus.publish(Topic.NOTIFICATIONS, kill_switch(SAME_REASON))
    await bus.drain()

    edited = await press(fake_api, "unkill")  # the older button, still within its 120 s

    assert [r for r in standins.calls(rpc.SET_KILL_SWITCH) if not r.engaged] == []
    assert edited["text"].startswith("Not released: the halt changed since you asked")
