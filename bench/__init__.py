"""agentfleet benchmarks: a load generator speaking the real protocol, a runner that starts an
embedded nats-server and a real controller subprocess, and one function per scenario.

Run ``python -m bench --help``; results and how they were obtained are in docs/benchmarks.md.
"""
