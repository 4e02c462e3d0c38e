"""Customerscore API client (contacts bulk upsert, tracker events)."""

from cs_posthog.customerscore.client import (
    MAX_BYTES,
    MAX_ITEMS,
    CustomerscoreClient,
    Delivery,
    ItemTooLargeError,
    batched,
    encode,
)

__all__ = ["MAX_BYTES", "MAX_ITEMS", "CustomerscoreClient", "Delivery", "ItemTooLargeError", "batched", "encode"]
