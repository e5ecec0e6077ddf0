"""shared.kotak.mapping: Kotak statuses, reply shapes and prices mapped to the contract types (pure functions)."""

from __future__ import annotations

import pytest
from neo_api_client.exceptions import ApiException

from shared.contracts import trading_pb2 as T
from shared.errors import NeoPulseError
from shared.kotak import mapping


def test_open_order_with_some_fills_is_partially_filled_with_paise_average():
    event = mapping.order_event({"nOrdNo": "9", "GuiOrdId": "c1", "ordSt": "open", "qty": 3, "fldQty": "1",
                                 "avgPrc": "1290.05"})
    assert (event.status, event.filled_quantity, event.average_price_paise) == (T.ORDER_STATUS_PARTIALLY_FILLED,
                                                                                  1, 129_005)


def test_early_feed_state_with_empty_price_and_quantity_maps_to_submitted_with_zeros():
    event = mapping.order_event({"nOrdNo": "9", "ordSt": "put order req received", "qty": 3, "fldQty": None,
                                 "avgPrc": ""})
    assert (event.status, event.filled_quantity, event.average_price_paise) == (T.ORDER_STATUS_SUBMITTED, 0, 0)


def test_a_timeout_is_an_unknown_outcome_and_a_not_ok_is_a_refusal():
    timeout = {"error": ApiException(status=0, reason="Request timeout after 2 seconds")}
    refused = {"stat": "Not_Ok", "emsg": "RMS:Margin Exceeds", "stCode": 1005}
    assert mapping.reply_error(timeout) == ("unknown", "Request timeout after 2 seconds")
    assert mapping.reply_error(refused) == ("refused", "RMS:Margin Exceeds")
    assert mapping.reply_error({"nOrdNo": "1", "stat": "Ok", "stCode": 200}) is None


def test_a_tag_kotak_already_holds_is_an_unknown_outcome_to_look_up_not_a_refusal():
    """A place sent again after an answer that never came (an expired session's retry) finds its first copy at Kotak:
    "Client OrderID already exists" (stCode 5204). Booked as refused, an order working at the exchange would be
    REJECTED in the ledger; looked up by its tag, it is adopted."""
    exists = {"stat": "Not_Ok", "stCode": 5204, "errMsg": "Client OrderID already exists"}

    assert mapping.reply_error(exists) == ("unknown", "Client OrderID already exists")
    assert mapping.reply_error({"stat": "Not_Ok", "emsg": "Order with this tag already exists"})[0] == "unknown"
    # 5204 alone is Kotak's general "<action> Response: <why>": a bad input is a refusal (kotak-neo-api #123).
    assert mapping.reply_error({"stat": "Not_Ok", "stCode": 5204, "errMsg": "Cancel Order Response : Bad Input"}) == (
        "refused", "Cancel Order Response : Bad Input")


def test_authentication_failed_is_a_session_kotak_no_longer_takes():
    """Kotak answers a token it stopped taking with code 10020 inside an error list (kotak-neo-api #166, #207): read
    as a plain refusal, NeoPulse never logged in again and booked its orders REJECTED."""
    reply = {"stat": "Not_Ok", "error": [{"code": "10020", "message": "Authentication Failed"}]}

    assert mapping.is_session_expired(reply)
    assert mapping.is_session_expired({"stat": "Not_Ok", "errMsg": "Authentication Failed"})


def test_a_5xx_is_an_unknown_outcome_whatever_its_body_says_and_an_unreadable_reply_too():
    """KotakTransport puts the HTTP status of a 5xx in the body (httpStatus); a gateway says it as "code"."""
    assert mapping.reply_error({"stat": "Not_Ok", "errMsg": "Not able to communicate with OMS", "httpStatus": 502}) \
        == ("unknown", "Not able to communicate with OMS")
    assert mapping.reply_error({"code": 504, "error": "Gateway Timeout"}) == ("unknown", "Gateway Timeout")
    assert mapping.reply_error({"httpStatus": 503}) == ("unknown", "HTTP 503")
    undecodable = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert mapping.reply_error({"error": undecodable})[0] == "unknown"  # an answer came: the call was made
    assert mapping.reply_error({"error": ValueError("quantity must be a number")})[0] == "refused"  # the SDK's own


def test_an_order_number_in_a_place_reply_is_an_order_placed_whatever_else_it_says():
    assert mapping.placed_order_id({"nOrdNo": "2411", "stat": "Ok", "stCode": 200}) == "2411"
    assert mapping.placed_order_id({"nOrdNo": "2411", "stat": "Ok", "message": "order placed"}) == "2411"
    assert mapping.placed_order_id({"nOrdNo": "2411", "stat": "Not_Ok", "errMsg": "RMS:Margin Exceeds"}) == ""
    assert mapping.placed_order_id({"stat": "Ok"}) == mapping.placed_order_id([]) == ""


def test_invalid_credentials_and_missing_2fa_both_read_as_session_expired():
    assert mapping.is_session_expired({"code": "900901", "message": "Invalid Credentials"})
    assert mapping.is_session_expired({"Error Message": "Complete the 2fa process before accessing this application"})
    assert not mapping.is_session_expired({"stat": "Not_Ok", "emsg": "RMS:Margin Exceeds"})


def test_limit_order_request_maps_to_sdk_place_arguments_with_the_tag():
    order = T.OrderRequest(client_order_id="sig-1", exchange_segment="nse_cm", symbol="TCS-EQ", side=T.SIDE_SELL,
                           quantity=4, order_type=T.ORDER_TYPE_LIMIT, price_paise=345_005, product=T.PRODUCT_CNC,
                           validity=T.VALIDITY_IOC)
    assert mapping.place_params(order) == {
        "exchange_segment": "nse_cm", "product": "CNC", "price": "3450.05", "order_type": "L", "quantity": "4",
        "validity": "IOC", "trading_symbol": "TCS-EQ", "transaction_type": "S", "trigger_price": "0.00",
        "tag": "sig-1"}


def test_funds_come_from_kotaks_limits_in_paise():
    """The reply's shape as Kotak's Limits API documents it (strings of rupees)."""
    reply = {"Category": "CLIENT_MTF", "CollateralValue": "10197.48", "Net": "10157.08", "MarginUsed": "40.4",
             "RealizedMtomPrsnt": "-12.5", "UnrealizedMtomPrsnt": "3", "stCode": 200, "stat": "Ok"}

    funds = mapping.funds(reply, now_ns=9)

    assert (funds.account, funds.total_paise, funds.available_paise, funds.margin_used_paise,
            funds.realised_pnl_paise, funds.unrealised_pnl_paise, funds.as_of_ns) == (
        "kotak", 10_197_48, 10_157_08, 40_40, -12_50, 3_00, 9)


def test_a_limits_reply_without_net_is_an_error_not_an_empty_account():
    with pytest.raises(NeoPulseError, match="carries no Net"):
        mapping.funds({"stat": "Ok", "CollateralValue": "100"}, now_ns=0)
