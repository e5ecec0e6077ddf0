"""Strategy: builds 1-minute candles from ticks, runs strategy plugins (MOMENTUM_RSI) and emits signals.

Talks to the rest only over the bus; see plugins.py for how to add a strategy.
"""
