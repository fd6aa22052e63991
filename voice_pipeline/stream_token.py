"""The one-time token that ties a media stream to the call whose TwiML minted it.

The TwiML webhook (signed by Twilio) puts ``call_id`` and this token in ``<Parameter>``s; the
voice server checks it in ``start.customParameters`` before binding the stream, so a socket that
did not come from that TwiML cannot attach itself to a call, even if it guesses a call id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def mint(secret: str, call_id: str, call_sid: str) -> str:
    mac = hmac.new(secret.encode(), f"stream:{call_id}:{call_sid}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode().rstrip("=")


def verify(secret: str, call_id: str, call_sid: str, token: str) -> bool:
    return hmac.compare_digest(mint(secret, call_id, call_sid), token)
