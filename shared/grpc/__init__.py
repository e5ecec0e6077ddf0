"""gRPC plumbing: generic servicers over the bus, the server, auth, metrics and split-mode bridges.

Talks to shared.bus and the generated contracts; no domain logic lives here.
"""
