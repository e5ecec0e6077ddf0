"""`make bench`: NeoPulse's benchmark harness; every figure beside a baseline measured in the same run."""
