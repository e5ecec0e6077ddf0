"""Generated protobuf and gRPC code for protos/neopulse/v1 (run `make proto`).

Do not edit the *_pb2* files by hand; tests fail when they are stale.
"""
