"""Polling sources: fetch an API on a schedule, diff it against the stored snapshot, emit events.

`fetch` walks one answer's pages, `diff` is the pure diff, `scheduler` decides when each source
is polled, and `engine` ties them into the `Poller` component (`bridge poll` is in `bridge/cli/`).
"""
