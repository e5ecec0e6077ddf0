"""Names that tie the bus to the gRPC contracts: request-handler names and stream topics.

A unary RPC is a bus request named by its full gRPC method; a server stream is a topic.
"""

from __future__ import annotations

from shared.bus import Topic
from shared.contracts import ingestion_pb2, notifier_pb2, oms_pb2, risk_pb2, strategy_pb2

PACKAGE = "neopulse.v1"

# service name -> the module that owns it
SERVICES = {
    "IngestionService": "ingestion",
    "StrategyService": "strategy",
    "RiskService": "risk",
    "OrderService": "oms",
    "NotifierService": "notifier",
}

DESCRIPTORS = {
    "IngestionService": ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"],
    "StrategyService": strategy_pb2.DESCRIPTOR.services_by_name["StrategyService"],
    "RiskService": risk_pb2.DESCRIPTOR.services_by_name["RiskService"],
    "OrderService": oms_pb2.DESCRIPTOR.services_by_name["OrderService"],
    "NotifierService": notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"],
}


def method(service: str, name: str) -> str:
    """The full gRPC method name, e.g. method("StrategyService", "PauseStrategy")."""
    if service not in DESCRIPTORS or name not in DESCRIPTORS[service].methods_by_name:
        raise KeyError(f"{service}/{name} is not in the contracts")
    return f"/{PACKAGE}.{service}/{name}"


# Server-streaming RPC -> the bus topic it streams.
STREAM_TOPICS = {
    method("IngestionService", "StreamTicks"): Topic.TICKS,
    method("StrategyService", "StreamSignals"): Topic.SIGNALS,
    method("StrategyService", "StreamCandles"): Topic.CANDLES,
    method("RiskService", "StreamDecisions"): Topic.ORDERS,
    method("OrderService", "StreamOrderUpdates"): Topic.ORDER_UPDATES,
    method("NotifierService", "StreamNotifications"): Topic.NOTIFICATIONS,
}

# Handy constants for the requests modules make of each other.
LIST_INSTRUMENTS = method("IngestionService", "ListInstruments")
GET_FEED_STATUS = method("IngestionService", "GetFeedStatus")
LIST_STRATEGIES = method("StrategyService", "ListStrategies")
PAUSE_STRATEGY = method("StrategyService", "PauseStrategy")
RESUME_STRATEGY = method("StrategyService", "ResumeStrategy")
SET_STRATEGY_PARAMS = method("StrategyService", "SetStrategyParams")
GET_QUOTES = method("StrategyService", "GetQuotes")
SUBMIT_ORDER = method("RiskService", "SubmitOrder")
CHECK_MODIFY = method("RiskService", "CheckModify")
GET_RISK_STATE = method("RiskService", "GetRiskState")
SET_RISK_LIMITS = method("RiskService", "SetRiskLimits")
SET_KILL_SWITCH = method("RiskService", "SetKillSwitch")
PLACE_ORDER = method("OrderService", "PlaceOrder")
CANCEL_ORDER = method("OrderService", "CancelOrder")
MODIFY_ORDER = method("OrderService", "ModifyOrder")
GET_ORDER = method("OrderService", "GetOrder")
GET_ORDER_HISTORY = method("OrderService", "GetOrderHistory")
LIST_ORDERS = method("OrderService", "ListOrders")
LIST_POSITIONS = method("OrderService", "ListPositions")
SQUARE_OFF = method("OrderService", "SquareOff")
GET_FUNDS = method("OrderService", "GetFunds")
NOTIFY = method("NotifierService", "Notify")
GET_SYSTEM_STATUS = method("NotifierService", "GetSystemStatus")
