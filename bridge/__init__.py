"""bridge: webhooks for APIs that have none, and one stream for polled and pushed events."""

__version__ = "0.1.0"
