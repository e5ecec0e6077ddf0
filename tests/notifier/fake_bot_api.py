"""A fake Telegram Bot API on loopback (aiohttp) for the real python-telegram-bot to talk to.

Serves POST /bot<TOKEN>/<method>; queues updates for getUpdates and records what the bot sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token"
BOT_USER = {"id": 999, "is_bot": True, "first_name": "NeoPulse", "username": "neopulse_test_bot"}


class FakeBotApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], float]] = []  # (method, params, monotonic time)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._callback_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self.rate_limit_next: list[int] = []  # retry_after seconds for the next sendMessage calls
        self.error_next: list[int] = []  # HTTP status codes for the next sendMessage calls
        self.fail: dict[str, list[int]] = {}  # method -> HTTP status codes for its next calls
        self.delay_next: list[float] = []  # the next sendMessage calls are delivered, but answered this late
        self.hold: dict[str, asyncio.Event] = {}  # method -> its calls are answered only once the event is set
        self.migrated: dict[int, int] = {}  # a group upgraded to a supergroup: old chat id -> new chat id
        # Telegram's check of an HTML sendMessage text: its 400 description ("Bad Request: ...") or None
        self.check_html: Callable[[str], str | None] | None = None
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self._port}"

    async def go_offline(self) -> None:
        """A network outage: open connections close and new ones are refused until go_online()."""
        await self.stop()
        self._runner = None

    async def go_online(self) -> None:
        """Back on the same address, as Telegram after an outage."""
        self._closing = False
        await self.start()

    async def stop(self) -> None:
        self._closing = True  # end held long polls now instead of at their deadline
        self._new_update.set()
        for gate in self.hold.values():
            gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests do ---------------------------------------------------------------
    def send_command(self, chat_id: int, text: str, user_id: int | None = None, age_s: float = 0.0) -> None:
        """Queue a user's message (by `user_id`, default the chat's own: a private chat), sent `age_s` ago; a leading
        /command gets its bot_command entity like Telegram's."""
        message = self._message(chat_id, text, user_id=chat_id if user_id is None else user_id)
        message["date"] = int(time.time() - age_s)
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        self._queue({"message": message})

    def press_button(self, chat_id: int, data: str, message_id: int = 1, user_id: int | None = None) -> str:
        """Queue a callback query, as if the user (default the chat's own) pressed an inline button carrying `data`."""
        query_id = str(next(self._callback_ids))
        message = self._message(chat_id, "confirm?", user_id=BOT_USER["id"], message_id=message_id)
        presser = self._user(chat_id if user_id is None else user_id)
        self._queue({"callback_query": {"id": query_id, "from": presser, "chat_instance": "ci",
                                        "data": data, "message": message}})
        return query_id

    def sent(self, method: str = "sendMessage", chat_id: int | None = None) -> list[dict[str, Any]]:
        return [p for m, p, _ in self.calls if m == method and (chat_id is None or int(p["chat_id"]) == chat_id)]

    async def wait_sent(self, count: int = 1, method: str = "sendMessage", chat_id: int | None = None,
                        within: float = 5.0) -> list[dict[str, Any]]:
        """Poll with a deadline until `count` calls of `method` have arrived; returns them."""
        deadline = time.monotonic() + within
        while len(found := self.sent(method, chat_id)) < count:
            assert time.monotonic() < deadline, f"only {len(found)} {method} calls arrived: {found}"
            await asyncio.sleep(0.01)
        return found

    # -- the server -------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params, time.monotonic()))
        if method == "sendMessage" and int(params.get("chat_id", 0)) in self.migrated:
            new_id = self.migrated[int(params["chat_id"])]
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: group chat was "
                                      "upgraded to a supergroup chat", "parameters": {"migrate_to_chat_id": new_id}},
                                     status=400)
        refusal = (self.check_html(str(params.get("text", ""))) if self.check_html and method == "sendMessage"
                   and params.get("parse_mode") == "HTML" else None)
        if refusal:
            return web.json_response({"ok": False, "error_code": 400, "description": refusal}, status=400)
        if method == "sendMessage" and self.rate_limit_next:
            wait = self.rate_limit_next.pop(0)
            return web.json_response({"ok": False, "error_code": 429, "description": f"Too Many Requests: "
                                      f"retry after {wait}", "parameters": {"retry_after": wait}}, status=429)
        failures = self.error_next if method == "sendMessage" else self.fail.get(method, [])
        if failures:
            status = failures.pop(0)
            return web.json_response({"ok": False, "error_code": status, "description": f"error {status}"},
                                     status=status)
        if method == "getUpdates":
            return _ok(await self._get_updates(params))
        if method == "getMe":
            return _ok(BOT_USER)
        if method in self.hold:
            await self.hold[method].wait()  # handled (recorded above), the answer comes when the test says
        if method == "sendMessage" and self.delay_next:
            await asyncio.sleep(self.delay_next.pop(0))  # delivered (recorded above), the answer comes late
        if method in ("sendMessage", "editMessageText"):
            return _ok(self._message(int(params["chat_id"]) if "chat_id" in params else 1, params.get("text", ""),
                                     user_id=BOT_USER["id"]))
        return _ok(True)  # deleteWebhook, answerCallbackQuery, setMyCommands, ...

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 1.0)
        while True:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if self._updates or self._closing or time.monotonic() >= deadline:
                return list(self._updates)
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass

    def _queue(self, body: dict[str, Any]) -> None:
        self._updates.append({"update_id": next(self._update_ids), **body})
        self._new_update.set()

    def _message(self, chat_id: int, text: str, user_id: int, message_id: int | None = None) -> dict[str, Any]:
        sender = BOT_USER if user_id == BOT_USER["id"] else self._user(user_id)
        return {"message_id": message_id or next(self._message_ids), "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private", "first_name": "T"} if chat_id > 0 else
                {"id": chat_id, "type": "supergroup", "title": "desk"}, "from": sender, "text": text}

    @staticmethod
    def _user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": "Trader"}


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


async def _params(request: web.Request) -> dict[str, Any]:
    """PTB posts JSON or form fields whose complex values are JSON-encoded."""
    if request.content_type == "application/json":
        return await request.json()
    form = await request.post()
    out: dict[str, Any] = {}
    for key, value in form.items():
        try:
            out[key] = json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
        except ValueError:
            out[key] = value
    return out
