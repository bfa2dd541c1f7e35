"""The self-contained demo: a simulated upstream, a receiving target, and the bridge between.

`upstream.py` changes items at Poisson times, serves them for polling and pushes each change
as a signed webhook; `target.py` verifies what the bridge delivers; `run.py` wires the three
together on 127.0.0.1 and measures polling against push.
"""
