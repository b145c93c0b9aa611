"""The examples' signature-verifying webhook receiver doubles as the tests' receiver."""

from __future__ import annotations

import sys

from support.paths import EXAMPLES

sys.path.insert(0, str(EXAMPLES))
from webhook_receiver import WebhookReceiver, delivery_id_for

__all__ = ["WebhookReceiver", "delivery_id_for"]
