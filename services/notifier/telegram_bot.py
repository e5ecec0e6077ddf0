"""The Telegram skin: python-telegram-bot Application, one authorisation gate, commands and confirm buttons.

Thin over services.notifier.control (which talks to the bus); polls getUpdates from the configured Bot API.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import RetryAfter, TelegramError
from telegram.ext import (
    Application,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from services.notifier import order_args, replies, setting_args
from services.notifier.config import NotifierSettings
from services.notifier.control import TERMINAL, Control
from services.notifier.messages import esc, split_lines, terms_change
from services.notifier.order_args import MAX_SYMBOL_CHARS
from shared.contracts import risk_pb2, trading_pb2
from shared.errors import NeoPulseError, NotFound
from shared.ids import MAX_TEXT_CHARS
from shared.money import fmt_inr
from shared.order_terms import changed_terms, terms_of
from shared.positions import exit_side

log = logging.getLogger(__name__)

Reply = tuple[str, InlineKeyboardMarkup | None]
Action = Callable[[int, list[str]], Awaitable[Reply]]
PtbCallback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]
ADMIN_ONLY = {"kill", "unkill", "squareoff", "pause", "resume", "cancel", "buy", "sell", "modify"}
# Commands that only show unless given changes (after this many arguments that say what to show); with changes
# they are admin chats' only, and ask to confirm.
ADMIN_TO_CHANGE = {"limits": 0, "params": 1}
KILL, KILL_CANCEL, UNKILL, SQUARE_OFF, CANCEL, PLACE, ABORT = "kill", "killc", "unkill", "sq", "cx", "place", "abort"
MODIFY, LIMITS, PARAMS = "mod", "lim", "par"
ALL = "*"
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
CONFIRM_TTL_S = 120.0  # a confirm button older than this does nothing (send the command again)
EXPIRED = "This confirmation has expired or was already answered; nothing changed. Ask again."
ERROR_CHARS = 500  # an error quoting a huge argument is cut, so its reply still fits Telegram's 4096
RETRY_AFTER_MAX_S = 30.0  # a reply rate-limited for longer than this is given up
MAX_CONCURRENT_UPDATES = 256  # updates in hand at once (PTB's default); an allowed chat's commands take turns
MAX_WAITING_COMMANDS = 32  # commands waiting for their turn; more are refused, so presses always find a free slot
BUSY = "Too many commands are waiting for earlier ones to finish; this one was not acted on. Send it again shortly."
SKIPS_THE_TURN = frozenset({"kill"})  # it only asks for its confirmation: nothing it does needs earlier ones done
STALE_COMMAND_S = CONFIRM_TTL_S  # a command that reaches the bot this late (Telegram was unreachable) is not acted on
NOT_YOURS = "Only the one who asked can answer this; nothing changed."
ADMINS_ONLY = "Only admin chats may confirm this."
# What a confirmed action is doing, for its prompt when it takes a while and for a press that comes meanwhile.
DOING = {KILL: "engaging the kill switch", KILL_CANCEL: "engaging the kill switch and cancelling open orders",
         UNKILL: "releasing the kill switch", SQUARE_OFF: "squaring off", CANCEL: "cancelling the order",
         PLACE: "placing the order", MODIFY: "modifying the order", LIMITS: "changing the limits",
         PARAMS: "changing the parameters"}
PROGRESS_AFTER_S = 1.0  # a confirmed action taking longer has its prompt show that it is being done
# The user whose command (or button press) is being handled: prompts remember who asked.
_USER: contextvars.ContextVar[int] = contextvars.ContextVar("telegram_user", default=0)


@dataclass
class Prompt:
    """One confirmation asked for: its buttons act once, in the chat that asked, while it is fresh."""

    chat_id: int
    actions: frozenset[str]  # the buttons it was sent with; callback_data is the client's, so others are refused
    user_id: int = field(default_factory=_USER.get)  # who asked: in a group, only they answer (a Halt: anyone)
    target: str = ""  # the square-off symbol (ALL for every position), or the order to cancel or change
    reason: str = ""  # the kill switch reason (engaging or releasing it)
    order: trading_pb2.OrderRequest | None = None  # the manual order to place, its client id minted at the ask
    change: tuple[int, int, int] = (0, 0, 0)  # the order's new quantity, price, trigger (paise); 0 keeps one
    settings: dict[str, Any] = field(default_factory=dict)  # risk limits, or the strategy `target`'s parameters, to set
    # What the prompt showed that must still hold at the press, read again then: the halt (state, reason) an /unkill
    # releases, the positions a /squareoff SYMBOL closes. Changed since: nothing is done.
    pinned: tuple[Any, ...] = ()
    asked: float = field(default_factory=time.monotonic)
    # Once a press took it: what a later press is told (that it is being done, then its outcome), so a second tap is
    # never told "nothing changed" while an order is being placed. Kept confirm_ttl_s after `answered` (monotonic
    # time of the outcome; inf while it is being done).
    answer: str = ""
    answered: float = 0.0

    def forgotten(self, now: float, ttl_s: float) -> bool:
        return now - max(self.asked, self.answered) > ttl_s


class ButtonsFirst(BaseUpdateProcessor):
    """Messages from allowed chats are handled one at a time, in the order they came, so commands act in order
    (a /pause, then a /resume). A confirm-button press is handled at once, beside them: a Halt never waits behind
    a reply sitting out Telegram's flood control (up to 2 x RETRY_AFTER_MAX_S) or a command waiting on a slow
    module. Presses need no turn: each acts on its own prompt, and a prompt is taken with no await in between
    (TelegramBot._take), so it acts once. A /kill needs no turn either (it only asks for the Halt's
    confirmation), and other chats' updates, which are only logged, do not queue. At most MAX_WAITING_COMMANDS
    commands wait; one more is answered BUSY and dropped, so the waiting never takes every slot from the presses."""

    def __init__(self, is_allowed: Callable[[int], bool]) -> None:
        super().__init__(MAX_CONCURRENT_UPDATES)
        self._is_allowed = is_allowed
        self._turn = asyncio.Lock()  # FIFO: updates take it in the order PTB starts them, the order they came
        self.waiting = 0  # commands in hand for their turn (the one acting included)
        self.refused = 0

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if not (isinstance(update, Update) and update.callback_query is None and chat and self._is_allowed(chat.id)
                and _command_name(update) not in SKIPS_THE_TURN):
            await coroutine
            return
        if self.waiting >= MAX_WAITING_COMMANDS:
            self.refused += 1
            cast(Coroutine[Any, Any, Any], coroutine).close()  # never awaited: nothing of it ran
            log.warning("telegram command refused: too many waiting", extra={"chat_id": chat.id,
                                                                             "waiting": self.waiting})
            if update.effective_message is not None:
                with contextlib.suppress(TelegramError):
                    await update.effective_message.reply_text(BUSY)
            return
        self.waiting += 1
        try:
            async with self._turn:
                await coroutine
        finally:
            self.waiting -= 1

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _command_name(update: Update) -> str:
    """"kill" for "/kill@NeoPulseBot now"; "" for what is not a command."""
    text = update.effective_message.text if update.effective_message is not None else None
    if not text or not text.startswith("/"):
        return ""
    return text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() if len(text) > 1 else ""


GROUP_ANONYMOUS_BOT = 1087968824  # the sender Telegram shows for a group's anonymous admin


def _asker(update: Update) -> int:
    """Who sent the command, for its prompt's buttons: 0 (any member may answer) for an anonymous admin, whose
    command comes from GroupAnonymousBot (or as the chat itself) while their press carries their own id."""
    user, message = update.effective_user, update.effective_message
    if user is None or user.id == GROUP_ANONYMOUS_BOT or (message is not None and message.sender_chat is not None):
        return 0
    return user.id


class TelegramBot:
    """Owns the PTB Application: start() begins polling, stop() ends it, send() delivers one HTML message."""

    def __init__(self, settings: NotifierSettings, control: Control) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.control = control
        self._prompts: dict[str, Prompt] = {}  # nonce in the buttons' callback_data -> the confirmation asked
        self.confirm_ttl_s = CONFIRM_TTL_S
        url = settings.telegram_base_url
        self.app = (Application.builder().token(settings.telegram_bot_token.get_secret_value())
                    .base_url(f"{url}/bot").base_file_url(f"{url}/file/bot")
                    .concurrent_updates(ButtonsFirst(settings.is_allowed)).build())
        actions: dict[str, Action] = {
            "start": self._help, "help": self._help, "status": self._status, "positions": self._positions,
            "orders": self._orders, "pnl": self._pnl, "strategies": self._strategies, "pause": self._pause,
            "resume": self._resume, "limits": self._limits, "kill": self._kill, "unkill": self._unkill,
            "squareoff": self._square_off, "cancel": self._cancel, "buy": self._buy, "sell": self._sell,
            "modify": self._modify, "params": self._params, "history": self._history, "quote": self._quote,
            "funds": self._funds}
        self.commands = tuple(actions)
        for name, action in actions.items():
            # New messages only: editing an old /unkill must not release the kill switch again.
            self.app.add_handler(CommandHandler(name, self._gated(name, action), filters=filters.UpdateType.MESSAGE))
        # Checked after the commands above: any other /command gets a pointer to /help instead of silence.
        self.app.add_handler(MessageHandler(filters.COMMAND & filters.UpdateType.MESSAGE, self._unknown))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._on_migrate))
        self.app.add_error_handler(self._on_error)

    def follow_migration(self, old_id: int, new_id: int) -> None:
        """A group upgraded to a supergroup: its rights go with it (NotifierSettings.follow_migration), said once."""
        if self.settings.follow_migration(old_id, new_id):
            log.warning("telegram group became a supergroup: its new id has its rights for this run; put it in the "
                        "config", extra={"chat_id": old_id, "new_chat_id": new_id})

    async def _on_migrate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Telegram's service message of an upgrade, in the old group (migrate_to) or the new one (migrate_from)."""
        message, chat = update.effective_message, update.effective_chat
        if message is None or chat is None:
            return
        if message.migrate_to_chat_id:
            self.follow_migration(chat.id, message.migrate_to_chat_id)
        elif message.migrate_from_chat_id:
            self.follow_migration(message.migrate_from_chat_id, chat.id)

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()
        try:  # the menu helps; a bot without it still takes every command
            await self.app.bot.set_my_commands([BotCommand(name, text) for name, text in replies.MENU])
        except TelegramError as exc:
            log.warning("telegram command menu not set", extra={"error": str(exc)})
        assert self.app.updater is not None
        # Commands sent while the bot was down are dropped: a stale /resume or /unkill must not act hours later.
        await self.app.updater.start_polling(timeout=int(self.settings.polling_timeout_seconds),
                                             drop_pending_updates=True)
        log.info("telegram bot polling", extra={"bot": self.app.bot.username,
                                                "allowed_chats": len(self.settings.allowed_chat_ids)})
        if not self.settings.notify_chat_ids:
            log.warning("telegram bot has no chat to talk to: alerts reach nobody and every command is refused; set "
                        "[notifier] allowed_chat_ids (NEOPULSE_NOTIFIER_ALLOWED_CHAT_IDS)")

    async def open_for_sending(self) -> None:
        """Ready to send (send()), without polling: for a stop that came while start() had not finished. Nothing
        to do once start() has initialised the application."""
        await self.app.initialize()

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def send(self, chat_id: int, html: str) -> None:
        await self.app.bot.send_message(chat_id, html, parse_mode=ParseMode.HTML,
                                        link_preview_options=NO_PREVIEW)

    # -- the gate ----------------------------------------------------------------
    def _allowed(self, update: Update, what: str) -> int | None:
        """The chat id when the chat may talk to the bot; otherwise log and return None (it gets nothing)."""
        chat = update.effective_chat
        if chat is not None and self.settings.is_allowed(chat.id):
            return chat.id
        user = update.effective_user
        log.warning("unauthorised telegram update ignored", extra={
            "chat_id": chat.id if chat else None, "user_id": user.id if user else None, "what": what})
        return None

    def _gated(self, name: str, action: Action) -> PtbCallback:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            chat_id = self._allowed(update, f"/{name}")
            message = update.effective_message
            if chat_id is None or message is None:
                return
            args = list(context.args or [])
            _USER.set(_asker(update))  # this update's own context
            await self.control.audit(name, args, _origin(update, chat_id))
            late_s = time.time() - message.date.timestamp() if message.date else 0.0
            if late_s > STALE_COMMAND_S:
                # Telegram keeps what was sent while the bot could not reach it: a /resume or /pause typed then
                # must not act now, long after the trader may have done otherwise.
                text, markup = (f"This /{name} was sent {late_s / 60:.0f} min ago and reached NeoPulse only now; "
                                "nothing done. Send it again if it still stands."), None
            elif name in ADMIN_ONLY and not self.settings.is_admin(chat_id):
                text, markup = f"Only admin chats may use /{name}.", None
            elif name in ADMIN_TO_CHANGE and args[ADMIN_TO_CHANGE[name]:] and not self.settings.is_admin(chat_id):
                text, markup = f"Only admin chats may change what /{name} shows.", None
            else:
                text, markup = await self._answer(action, chat_id, args)
            *first, last = split_lines(text)
            for chunk in first:
                await _patiently(message.reply_text, chunk, parse_mode=ParseMode.HTML)
            await _patiently(message.reply_text, last, parse_mode=ParseMode.HTML, reply_markup=markup)
        return handle

    async def _unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text or self._allowed(update, "unknown command") is None:
            return
        command, _, bot = message.text.split()[0].partition("@")
        if bot and bot.lower() != (self.app.bot.username or "").lower():
            return  # meant for another bot in the same group
        await _patiently(message.reply_text, f"Unknown command {esc(command[:64])}; /help lists the commands.",
                         parse_mode=ParseMode.HTML)

    async def _answer(self, action: Action, chat_id: int, args: list[str]) -> Reply:
        """Run one action; bus errors become a short readable line, never a traceback."""
        try:
            return await action(chat_id, args)
        except NeoPulseError as exc:
            text = str(exc)
            return f"⚠️ {esc(text[:ERROR_CHARS])}{'…' if len(text) > ERROR_CHARS else ''}", None  # cut, then escape
        except Exception:
            log.exception("telegram command failed", extra={"chat_id": chat_id})
            return "⚠️ internal error; see the server log", None

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram update failed", extra={"error": repr(context.error)})

    # -- read-only commands ------------------------------------------------------
    async def _help(self, chat_id: int, args: list[str]) -> Reply:
        return replies.HELP, None

    async def _status(self, chat_id: int, args: list[str]) -> Reply:
        return replies.status_html(await self.control.status()), None

    async def _positions(self, chat_id: int, args: list[str]) -> Reply:
        return replies.positions_html(await self.control.positions()), None

    async def _orders(self, chat_id: int, args: list[str]) -> Reply:
        which = args[0].lower() if args else "open"
        orders, more = await self.control.orders_and_more(which)
        return replies.orders_html(orders, which, more), None

    async def _history(self, chat_id: int, args: list[str]) -> Reply:
        if len(args) != 1 or len(args[0]) > MAX_TEXT_CHARS:
            return "⚠️ order: give one order's id, as /orders shows it (e.g. /history sig-1a2b3c)", None
        return replies.history_html(await self.control.history(args[0])), None

    async def _pnl(self, chat_id: int, args: list[str]) -> Reply:
        return replies.pnl_html(await self.control.positions()), None

    async def _funds(self, chat_id: int, args: list[str]) -> Reply:
        return replies.funds_html(await self.control.funds()), None

    async def _strategies(self, chat_id: int, args: list[str]) -> Reply:
        return replies.strategies_html(await self.control.strategies()), None

    async def _limits(self, chat_id: int, args: list[str]) -> Reply:
        """The risk state and limits; given NAME=VALUE pairs, the changes shown and asked to confirm (all or none)."""
        state = await self.control.risk_state()
        if not args:
            return replies.limits_html(state), None
        try:
            changes = dict(setting_args.limit_change(a) for a in args)
        except ValueError as exc:
            return f"⚠️ {esc(str(exc)[:ERROR_CHARS])} (e.g. /limits max_order_quantity=500)", None
        nonce = self._ask(Prompt(chat_id, frozenset({LIMITS, ABORT}), settings=changes))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Change the limits", callback_data=f"{LIMITS}:{nonce}"),
                                          InlineKeyboardButton("Keep them", callback_data=f"{ABORT}:{nonce}")]])
        was = {name: getattr(state.limits, name) for name in changes}
        lines = "\n".join(f"{name}: {replies.limit_value(name, was[name])} → {replies.limit_value(name, value)}"
                          for name, value in changes.items())
        return f"Change these risk limits?\n{lines}", keyboard

    async def _quote(self, chat_id: int, args: list[str]) -> Reply:
        """Prices now: of the symbols named, else the indices. An index's name holds spaces: the words are one name
        when they name one (/quote Nifty 50), else one symbol each; commas separate names (/quote Nifty 50, SBIN-EQ)."""
        text = " ".join(args)
        if "," in text:
            symbols = [s.strip() for s in text.split(",") if s.strip()]
        elif len(args) > 1:
            try:
                return replies.quotes_html(await self.control.quotes([text]), asked=True), None
            except NotFound:
                symbols = args
        else:
            symbols = args
        return replies.quotes_html(await self.control.quotes(symbols), asked=bool(symbols)), None

    async def _params(self, chat_id: int, args: list[str]) -> Reply:
        """A strategy's parameters; given NAME=VALUE pairs after its name, the changes shown and asked to confirm
        (the strategy checks them all with the rest when they are set: all or none)."""
        if not args:
            return "⚠️ give a strategy's name, as /strategies shows it, e.g. /params momentum_rsi", None
        info = await self.control.strategy(args[0])
        if not args[1:]:
            return replies.params_html(info), None
        try:
            changes = setting_args.param_changes(args[1:])
        except ValueError as exc:
            return f"⚠️ {esc(str(exc)[:ERROR_CHARS])}", None
        nonce = self._ask(Prompt(chat_id, frozenset({PARAMS, ABORT}), target=info.name, settings=changes))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Change them", callback_data=f"{PARAMS}:{nonce}"),
                                          InlineKeyboardButton("Keep them", callback_data=f"{ABORT}:{nonce}")]])
        lines = "\n".join(f"{esc(name)}: {esc(info.params.get(name, '(not set)'))} → {esc(value)}"
                          for name, value in changes.items())
        return f"Change {esc(info.name)}'s parameters?\n{lines}", keyboard

    # -- commands that change things -----------------------------------------------
    async def _pause(self, chat_id: int, args: list[str]) -> Reply:
        info = await self.control.pause(" ".join(args), reason=f"telegram:{chat_id} /pause")  # who, for /strategies
        return replies.strategy_changed_html(info), None

    async def _resume(self, chat_id: int, args: list[str]) -> Reply:
        return replies.strategy_changed_html(await self.control.resume(" ".join(args))), None

    def _ask(self, prompt: Prompt) -> str:
        """Remember a confirmation; returns the nonce its buttons carry."""
        now = time.monotonic()
        for nonce in [n for n, p in self._prompts.items() if p.forgotten(now, self.confirm_ttl_s)]:
            del self._prompts[nonce]
        nonce = secrets.token_urlsafe(9)
        self._prompts[nonce] = prompt
        return nonce

    async def _kill(self, chat_id: int, args: list[str]) -> Reply:
        nonce = self._ask(Prompt(chat_id, frozenset({KILL, KILL_CANCEL, ABORT}),
                                  reason=" ".join(args) or f"telegram:{chat_id} /kill"))
        keyboard = InlineKeyboardMarkup([
            [InlineKeyboardButton("🛑 Halt", callback_data=f"{KILL}:{nonce}"),
             InlineKeyboardButton("🛑 Halt + cancel open orders", callback_data=f"{KILL_CANCEL}:{nonce}")],
            [InlineKeyboardButton("Keep trading", callback_data=f"{ABORT}:{nonce}")]])
        # No /command in a prompt's text: Telegram makes it a link, and one tap would send it.
        return "Engage the kill switch? No new orders until it is released.", keyboard

    def halt_changed(self) -> None:
        """The kill switch was engaged or released (risk's notification of it): an /unkill prompt asked before releases
        nothing, whatever the halt is now. Its reason's wording may be the same as the new halt's ("telegram:<chat>
        /kill", "neopulse ctl halt"), so the (state, reason) read at the press cannot tell them apart."""
        for prompt in self._prompts.values():
            if UNKILL in prompt.actions:
                prompt.pinned = ("the halt changed since",)

    async def _unkill(self, chat_id: int, args: list[str]) -> Reply:
        """Releasing the kill switch asks first too: a stray tap on a /unkill link must not re-arm trading. Asked only
        while trading is HALTED, with why; the button releases that halt only: one engaged again after the prompt
        was shown (another chat, the CLI, a gRPC client) is not released by it (_confirmed reads the halt again)."""
        halt = await self._halt()
        if halt[0] != risk_pb2.TRADING_STATE_HALTED:
            return (f"The kill switch is not engaged: trading is {replies.state_html(*halt)}. Nothing to "
                    "release."), None
        nonce = self._ask(Prompt(chat_id, frozenset({UNKILL, ABORT}), pinned=halt,
                                 reason=" ".join(args) or f"telegram:{chat_id} /unkill"))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("▶️ Release, trade again",
                                                               callback_data=f"{UNKILL}:{nonce}"),
                                          InlineKeyboardButton("Stay halted", callback_data=f"{ABORT}:{nonce}")]])
        why = f"Trading is {replies.state_html(*halt)}.\n" if halt[1] else ""
        return f"{why}Release the kill switch? Strategies may place new orders again.", keyboard

    async def _halt(self) -> tuple[int, str]:
        """Risk's trading state and its reason: what an /unkill prompt is about."""
        state = await self.control.risk_state()
        return state.state, state.state_reason

    async def _square_off(self, chat_id: int, args: list[str]) -> Reply:
        """Lists what it closes and asks: a symbol's every position, each product and segment (the OMS closes them
        all); the button closes them only while they are what the prompt listed (_confirmed reads them again)."""
        symbol = args[0].upper() if args else "ALL"
        if len(args) > 1 or symbol == ALL or len(symbol) > MAX_SYMBOL_CHARS:
            return "⚠️ symbol: give one trading symbol (e.g. /squareoff SBIN-EQ), or all; nothing squared off", None
        target = ALL if symbol == "ALL" else symbol
        held = await self._open_positions(target)
        if not held:
            where = "" if target == ALL else f" in {esc(target)}"
            return f"No open position{where}; nothing to square off.", None
        # Square off ALL is pinned to nothing: what is open at the press is what "all" means.
        nonce = self._ask(Prompt(chat_id, frozenset({SQUARE_OFF, ABORT}), target=target,
                                 pinned=() if target == ALL else _pin(held)))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(f"Square off {symbol}",
                                                               callback_data=f"{SQUARE_OFF}:{nonce}"),
                                          InlineKeyboardButton("Cancel", callback_data=f"{ABORT}:{nonce}")]])
        if target == ALL:
            return "Square off ALL positions with market orders?", keyboard
        return replies.square_off_prompt_html(target, held), keyboard

    async def _open_positions(self, target: str) -> list[trading_pb2.Position]:
        """The open positions a SquareOff of `target` (ALL: every one) closes, picked as the OMS picks them: by
        symbol alone, every product and segment."""
        positions = (await self.control.positions()).positions
        return [p for p in positions if p.net_quantity and (target == ALL or p.symbol.upper() == target)]

    async def _cancel(self, chat_id: int, args: list[str]) -> Reply:
        """Shows the order and asks; an order already ended is said at once (nothing to confirm)."""
        if len(args) != 1 or len(args[0]) > MAX_TEXT_CHARS:
            return "⚠️ order: give one order's id, as /orders shows it (e.g. /cancel sig-1a2b3c)", None
        order = await self.control.order(args[0])
        if order.status in TERMINAL:
            return f"Nothing to cancel: {replies.order_line(order)}", None
        nonce = self._ask(Prompt(chat_id, frozenset({CANCEL, ABORT}), target=order.internal_id))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Cancel the order", callback_data=f"{CANCEL}:{nonce}"),
                                          InlineKeyboardButton("Keep it", callback_data=f"{ABORT}:{nonce}")]])
        return f"Cancel this order?\n{replies.order_line(order)}", keyboard

    async def _buy(self, chat_id: int, args: list[str]) -> Reply:
        return await self._manual_order(chat_id, args, trading_pb2.SIDE_BUY)

    async def _sell(self, chat_id: int, args: list[str]) -> Reply:
        return await self._manual_order(chat_id, args, trading_pb2.SIDE_SELL)

    async def _manual_order(self, chat_id: int, args: list[str], side: trading_pb2.Side) -> Reply:
        """Shows the order and asks; it is placed by the confirm button, never by the command. A limit price in
        rupees (two decimals at most, never rounded) or mkt; a stop order with trigger=RUPEES (SL, or SL-M at mkt);
        MIS unless CNC or NRML follows."""
        verb = "Buy" if side == trading_pb2.SIDE_BUY else "Sell"
        asked = order_args.manual_order(args)
        if asked is None:
            return (f"⚠️ give SYMBOL QUANTITY and a limit price in rupees or mkt, e.g. /{verb.lower()} SBIN-EQ 1 "
                    "812.50 (MIS; add CNC or NRML for another product, trigger=RUPEES for a stop order)"), None
        order = await self.control.manual_order(asked.symbol, side, asked.quantity, limit_paise=asked.limit_paise,
                                                stop_paise=asked.trigger_paise,
                                                product=trading_pb2.Product.Value(f"PRODUCT_{asked.product}"))
        nonce = self._ask(Prompt(chat_id, frozenset({PLACE, ABORT}), order=order))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(f"{verb} {asked.quantity} {order.symbol}",
                                                               callback_data=f"{PLACE}:{nonce}"),
                                          InlineKeyboardButton("Don't", callback_data=f"{ABORT}:{nonce}")]])
        price = f"at {fmt_inr(asked.limit_paise)}" if asked.limit_paise else "at market"
        if asked.trigger_paise:
            price += f" once it trades at {fmt_inr(asked.trigger_paise)} (a stop order)"
        held = await self._held_by_strategies(order)
        return f"{verb} {asked.quantity} <b>{esc(order.symbol)}</b> {price}, {asked.product}?{held}", keyboard

    async def _held_by_strategies(self, order: trading_pb2.OrderRequest) -> str:
        """A warning for the prompt of a manual order that would close what strategies hold in its instrument: it is
        not theirs, so they would still count the position and exit it again (a short, from a long closed by hand).
        A square-off is what they are told of. "" when none does, or the strategies cannot be asked now."""
        try:
            infos = await self.control.strategies()
        except NeoPulseError as exc:
            log.info("strategies not asked about a manual order's instrument", extra={"error": str(exc)})
            return ""
        held = [f"{esc(info.name)} holds {p.net_quantity:+d}" for info in infos for p in info.positions
                if p.token == order.token and p.net_quantity and exit_side(p.net_quantity) == order.side]
        if not held:
            return ""
        return (f"\n⚠️ {', '.join(held)}: this order is not theirs, they would still hold it and exit it again. To "
                "close a strategy's position, square it off instead: they are told of a square-off.")

    async def _modify(self, chat_id: int, args: list[str]) -> Reply:
        """Shows the order's terms, what changes, and asks (a raised quantity or a mistyped price adds risk, as an
        order does); an order ended, or with those terms already, is said at once (nothing to confirm)."""
        asked = order_args.order_change(args)
        if asked is None:
            return ("⚠️ give the order's id, as /orders shows it, and what to change: qty=N (the new total), "
                    "price=RUPEES, trigger=RUPEES, e.g. /modify sig-1a2b3c qty=20 price=812.50"), None
        order = await self.control.order(asked[0])
        old = terms_of(order.request)
        new = old if order.status in TERMINAL else changed_terms(order.request, order.filled_quantity, asked[1],
                                                                 names=order_args.CHANGE_NAMES)
        if new == old:
            return f"Nothing to change: {replies.order_line(order)}", None
        nonce = self._ask(Prompt(chat_id, frozenset({MODIFY, ABORT}), target=order.internal_id, change=asked[1]))
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Modify the order", callback_data=f"{MODIFY}:{nonce}"),
                                          InlineKeyboardButton("Keep it", callback_data=f"{ABORT}:{nonce}")]])
        return f"Modify this order?\n{replies.order_line(order)}\n{terms_change(old, new)}", keyboard

    # -- confirm buttons -----------------------------------------------------------
    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat_id = self._allowed(update, "button")
        if chat_id is None or query is None:
            return
        data = query.data or ""
        _USER.set(query.from_user.id if query.from_user else 0)  # who pressed: _take checks it is who asked
        # Taken before any await: of two presses handled together, one acts and the other is told so.
        taken = self._take(chat_id, data) if self.settings.is_admin(chat_id) else ADMINS_ONLY
        async with asyncio.TaskGroup() as tg:
            # Beside the action, not before it: Telegram refusing or delaying the acknowledgement ("query is too
            # old", a 429, a timeout) must neither lose nor hold up a confirmed Halt.
            tg.create_task(self._acknowledge(query, chat_id))
            await self.control.audit("confirm", [data], _origin(update, chat_id))
            if isinstance(taken, Prompt):
                text = await self._carry_out(tg, query, chat_id, taken, data.partition(":")[0])
            elif taken not in (EXPIRED, ADMINS_ONLY):
                # The prompt keeps its buttons for the one who asked, or is the earlier press's to edit: its
                # outcome must not be overwritten.
                await _patiently(self.app.bot.send_message, chat_id, taken, parse_mode=ParseMode.HTML)
                return
            else:
                text = taken
            await self._tell_outcome(query, chat_id, text)

    def _take(self, chat_id: int, data: str) -> Prompt | str:
        """The prompt this press answers, taken for it (its buttons act once, whichever is pressed); else what to
        say: EXPIRED, NOT_YOURS, or for a prompt an earlier press took, what that press is doing or did."""
        action, _, nonce = data.partition(":")
        prompt = self._prompts.get(nonce)
        # Another chat's press, or an action this prompt has no button for, leaves the prompt as it was.
        if prompt is None or prompt.chat_id != chat_id or action not in prompt.actions:
            return EXPIRED
        if prompt.answer:
            return prompt.answer
        if prompt.user_id and prompt.user_id != _USER.get() and action not in (KILL, KILL_CANCEL):
            # In a group, another member's press answers nothing (the prompt stays for the one who asked); a Halt,
            # the safe way, anyone in the chat may press.
            return NOT_YOURS
        if time.monotonic() - prompt.asked > self.confirm_ttl_s:
            del self._prompts[nonce]
            return EXPIRED
        doing = DOING.get(action)
        prompt.answer = (f"Already confirmed: {doing}. The outcome will show in the prompt." if doing else
                         "Already answered; nothing changed.")
        prompt.answered = math.inf
        return prompt

    async def _carry_out(self, tg: asyncio.TaskGroup, query: CallbackQuery, chat_id: int, prompt: Prompt,
                         action: str) -> str:
        """The confirmed action done: its outcome, which later presses are told too. When it takes a while (risk, the
        ledger, the broker), the prompt says meanwhile that it is being done, without its buttons."""
        async def act(chat_id: int, args: list[str]) -> Reply:
            return await self._confirmed(prompt, action)

        acting = tg.create_task(self._answer(act, chat_id, []))
        done, _ = await asyncio.wait({acting}, timeout=PROGRESS_AFTER_S)
        if not done and action in DOING:
            try:  # best effort, and awaited before the outcome's edit, so it never lands after it
                await query.edit_message_text(f"⏳ Confirmed: {DOING[action]}… The outcome will show here.")
            except Exception as exc:
                log.warning("prompt not marked as being acted on", extra={"chat_id": chat_id, "error": str(exc)})
        text, _ = await acting
        first_line = text.split("\n", 1)[0]
        prompt.answer, prompt.answered = f"Already answered: {first_line}", time.monotonic()
        return text

    async def _acknowledge(self, query: CallbackQuery, chat_id: int) -> None:
        """Stop the client's spinner; best effort (the outcome is told by editing the prompt)."""
        try:
            await query.answer()
        except Exception as exc:  # whatever PTB raises here must not cancel the action beside it
            log.warning("button press not acknowledged; acted on anyway", extra={"chat_id": chat_id,
                                                                                  "error": str(exc)})

    async def _tell_outcome(self, query: CallbackQuery, chat_id: int, text: str) -> None:
        """The prompt edited into what happened; when Telegram will not edit it (deleted, say), a new message."""
        first, *rest = split_lines(text)
        try:
            await _patiently(query.edit_message_text, first, parse_mode=ParseMode.HTML)
        except TelegramError as exc:
            log.warning("prompt not edited; the outcome goes as a new message", extra={"chat_id": chat_id,
                                                                                        "error": str(exc)})
            rest.insert(0, first)
        for chunk in rest:
            await _patiently(self.app.bot.send_message, chat_id, chunk, parse_mode=ParseMode.HTML)

    async def _confirmed(self, prompt: Prompt, action: str) -> Reply:
        if action in (KILL, KILL_CANCEL):
            state = await self.control.kill(prompt.reason, cancel_open_orders=action == KILL_CANCEL)
            extra = " Open orders are being cancelled." if action == KILL_CANCEL else ""
            return f"🛑 Kill switch engaged. Trading is {replies.state_label(state)}.{extra}", None
        if action == UNKILL:
            halt = await self._halt()
            if halt != prompt.pinned:
                return (f"Not released: the halt changed since you asked, trading is {replies.state_html(*halt)} "
                        "now; nothing changed. Ask again if it still stands."), None
            state = await self.control.unkill(prompt.reason)
            return f"Kill switch released. Trading is {replies.state_label(state)}.", None
        if action == SQUARE_OFF:
            symbol = "" if prompt.target == ALL else prompt.target
            if symbol and _pin(await self._open_positions(symbol)) != prompt.pinned:
                return (f"Not squared off: the {esc(symbol)} positions changed since you asked; nothing changed. "
                        "Ask again to see them now."), None
            return replies.square_off_html(await self.control.square_off(symbol), symbol), None
        if action == CANCEL:
            return f"Cancel sent: {replies.order_line(await self.control.cancel(prompt.target))}", None
        if action == PLACE and prompt.order is not None:
            placed = await self.control.place(prompt.order)
            return f"Placed: {replies.order_line(placed)} · <code>{esc(prompt.order.client_order_id)}</code>", None
        if action == MODIFY:
            return replies.modified_html(await self.control.modify(prompt.target, *prompt.change)), None
        if action == LIMITS:
            return f"Limits changed.\n{replies.limits_html(await self.control.set_limits(prompt.settings))}", None
        if action == PARAMS:
            info = await self.control.set_params(prompt.target, prompt.settings)
            return f"Parameters changed: {replies.params_html(info)}", None
        if PLACE in prompt.actions or MODIFY in prompt.actions:
            return f"Not {'placed' if PLACE in prompt.actions else 'modified'}; nothing changed.", None
        if LIMITS in prompt.actions or PARAMS in prompt.actions:
            return "Kept; nothing changed.", None
        return ("Order kept; nothing changed." if CANCEL in prompt.actions else "Cancelled; nothing changed."), None


def _pin(held: list[trading_pb2.Position]) -> tuple[tuple[str, int, int, int], ...]:
    """What a square-off prompt listed, to compare with the positions at the press."""
    return tuple(sorted((p.exchange_segment, p.token, p.product, p.net_quantity) for p in held))


def _origin(update: Update, chat_id: int) -> str:
    """Who a command or press came from, for the audit: the chat, and in a group the member too."""
    user = update.effective_user
    return f"telegram:{chat_id}" if user is None or user.id == chat_id else f"telegram:{chat_id} user {user.id}"


async def _patiently(send: Callable[..., Awaitable[Message | bool]], *args: Any, **kwargs: Any) -> None:
    """A reply or an edit, sent again after Telegram's flood-control wait (a few times, for at most
    RETRY_AFTER_MAX_S each); the command's answer is not dropped on a 429."""
    for attempt in range(3):
        try:
            await send(*args, **kwargs)
            return
        except RetryAfter as exc:
            wait = exc.retry_after if isinstance(exc.retry_after, (int, float)) else exc.retry_after.total_seconds()
            if attempt == 2 or wait > RETRY_AFTER_MAX_S:
                raise
            await asyncio.sleep(wait)
