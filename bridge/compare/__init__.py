"""Polling against push, measured: the latency figures (`report`) and their tables and picture
(`view`)."""
