"""Webhooks on document change: ``rules`` decides (pure), ``dispatcher`` sends."""

from tandem.webhooks.rules import Subscription, parse_subscriptions, sign, verify_signature

__all__ = ["Subscription", "parse_subscriptions", "sign", "verify_signature"]
