"""The Kotak Neo simulator: a local Kotak (REST, SFeed, order feed) for the unmodified SDK.

server.Simulator is the entry point; `neopulse sim` runs it alone.
"""
