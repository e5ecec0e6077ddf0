"""Tests of the Kotak Neo path: the real SDK against the simulator on 127.0.0.1.

KotakBroker, KotakFeedSource, the sim command and VirtualBroker pass-through.
"""
