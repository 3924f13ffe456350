"""Latency and soak benchmarks: real websocket clients of a real server."""
