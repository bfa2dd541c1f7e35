"""Outbound delivery: the outbox workers, Standard Webhooks signing, retries, circuit breaker."""
