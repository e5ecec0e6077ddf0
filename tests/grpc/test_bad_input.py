"""Bad input to every RPC that takes input, against the real monolith: the right status code, a message
naming the field or id, and no traceback."""

import grpc
import pytest

from shared.contracts import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    oms_pb2,
    oms_pb2_grpc,
    ops_pb2,
    risk_pb2,
    risk_pb2_grpc,
    strategy_pb2,
    strategy_pb2_grpc,
    trading_pb2,
)
from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import Proc

pytestmark = pytest.mark.slow
INV, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    port = free_port()
    proc = Proc(["run", "--grpc-port", str(port), "--duration", "90", "--source", "synthetic", "--speed", "60",
                 "--no-db"], tmp_path_factory.mktemp("monolith") / "run.log")
    try:
        proc.wait_for_line(f"gRPC listening on 127.0.0.1:{port}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=10)
            yield ch
    finally:
        proc.stop()


def good_order(**change):
    fields = dict(token=2885, exchange_segment="nse_cm", symbol="RELIANCE-EQ", side=trading_pb2.SIDE_BUY,
                  quantity=1, order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=100_000,
                  product=trading_pb2.PRODUCT_MIS, validity=trading_pb2.VALIDITY_DAY, strategy_tag="MANUAL")
    fields.update(change)
    return trading_pb2.OrderRequest(**fields)


CASES = [
    # (stub, method, request, expected code, text the message must contain)
    ("strategy", "PauseStrategy", strategy_pb2.PauseStrategyRequest(name="nope"), NF, "nope"),
    ("strategy", "PauseStrategy", strategy_pb2.PauseStrategyRequest(name=""), INV, "name"),
    ("strategy", "ResumeStrategy", strategy_pb2.ResumeStrategyRequest(name="nope"), NF, "nope"),
    ("strategy", "SetStrategyParams",
     strategy_pb2.SetStrategyParamsRequest(name="momentum_rsi", params={"rsi_period": "-3"}), INV, "rsi_period"),
    ("strategy", "SetStrategyParams",
     strategy_pb2.SetStrategyParamsRequest(name="momentum_rsi", params={"no_such": "1"}), INV, "no_such"),
    ("strategy", "SetStrategyParams", strategy_pb2.SetStrategyParamsRequest(name="nope", params={}), NF, "nope"),
    ("strategy", "GetQuotes", strategy_pb2.GetQuotesRequest(symbols=["RELIANCE-EQ", "NOSUCH-EQ"]), NF,
     "NOSUCH-EQ"),
    ("strategy", "GetQuotes", strategy_pb2.GetQuotesRequest(symbols=["RELIANCE-EQ"] * 201), INV, "symbols"),
    ("risk", "SubmitOrder", risk_pb2.SubmitOrderRequest(order=good_order(quantity=0)), INV, "quantity"),
    ("risk", "SubmitOrder", risk_pb2.SubmitOrderRequest(order=good_order(token=999999)), INV, "token"),
    ("risk", "SetRiskLimits", risk_pb2.SetRiskLimitsRequest(limits=risk_pb2.RiskLimits(max_order_quantity=-1)),
     INV, "max_order_quantity"),
    ("oms", "PlaceOrder", oms_pb2.PlaceOrderRequest(order=good_order(quantity=-5)), INV, "quantity"),
    ("oms", "PlaceOrder", oms_pb2.PlaceOrderRequest(order=good_order(side=trading_pb2.SIDE_UNSPECIFIED)),
     INV, "side"),
    ("oms", "PlaceOrder", oms_pb2.PlaceOrderRequest(order=good_order(price_paise=100_003)), INV, "tick"),
    ("oms", "PlaceOrder", oms_pb2.PlaceOrderRequest(order=good_order(reason="x" * 257)), INV, "order.reason"),
    ("risk", "SubmitOrder", risk_pb2.SubmitOrderRequest(order=good_order(reason="x" * 257)), INV, "reason"),
    # proto3 enums take any number: one the contract does not define is never placed (Kotak would get garbage).
    ("oms", "PlaceOrder", oms_pb2.PlaceOrderRequest(order=good_order(order_type=2147483647)), INV, "order_type"),
    ("risk", "SubmitOrder", risk_pb2.SubmitOrderRequest(order=good_order(validity=7)), INV, "validity"),
    ("oms", "CancelOrder", oms_pb2.CancelOrderRequest(order_id=""), INV, "order_id"),
    ("oms", "CancelOrder", oms_pb2.CancelOrderRequest(order_id="no-such-order"), NF, "no-such-order"),
    ("oms", "ModifyOrder", oms_pb2.ModifyOrderRequest(order_id="", price_paise=100_00), INV, "order_id"),
    ("oms", "ModifyOrder", oms_pb2.ModifyOrderRequest(order_id="no-such-order", price_paise=100_00), NF,
     "no-such-order"),
    ("risk", "CheckModify", risk_pb2.CheckModifyRequest(), INV, "order"),
    ("oms", "GetOrder", oms_pb2.GetOrderRequest(order_id="no-such-order"), NF, "no-such-order"),
    ("oms", "ListOrders", oms_pb2.ListOrdersRequest(limit=-1), INV, "limit"),
    ("oms", "SquareOff", oms_pb2.SquareOffRequest(symbol="NOSUCH-EQ"), NF, "NOSUCH-EQ"),
    ("notifier", "Notify", notifier_pb2.NotifyRequest(notification=ops_pb2.Notification()), INV, "notification"),
]

STUBS = {"strategy": strategy_pb2_grpc.StrategyServiceStub, "risk": risk_pb2_grpc.RiskServiceStub,
         "oms": oms_pb2_grpc.OrderServiceStub, "notifier": notifier_pb2_grpc.NotifierServiceStub,
         "ingestion": ingestion_pb2_grpc.IngestionServiceStub}


@pytest.mark.parametrize(("stub", "method", "request_", "code", "needle"), CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_the_right_status_and_a_message_naming_it(channel, stub, method, request_, code, needle):
    with pytest.raises(grpc.RpcError) as err:
        getattr(STUBS[stub](channel), method)(request_, timeout=10)
    assert err.value.code() == code, err.value.details()
    assert needle in err.value.details() and "Traceback" not in err.value.details()


@pytest.mark.parametrize(("stub", "method", "request_"), [
    ("ingestion", "StreamTicks", ingestion_pb2.StreamTicksRequest(tokens=[999999])),
    ("strategy", "StreamCandles", strategy_pb2.StreamCandlesRequest(tokens=[999999])),
])
def test_a_market_data_stream_for_an_unknown_token_is_invalid_argument(channel, stub, method, request_):
    stream = getattr(STUBS[stub](channel), method)(request_, timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stream))
    assert err.value.code() == INV and "999999" in err.value.details()
