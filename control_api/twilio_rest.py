"""Twilio's REST API for outbound calls, through the official SDK's async client.

``TWILIO_API_BASE`` points the SDK at the real API or at the local stand-in; the SDK's
region/edge environment variables are ignored on purpose (they rewrite the host and would
mangle a loopback address). Every call is bounded by our own timeout, and every failure
becomes :class:`TwilioError` with Twilio's code and message when there is one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from voice_pipeline.settings import Settings

STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class TwilioError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class CreatedCall:
    sid: str
    status: str


class TwilioRest:
    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self._http = AsyncTwilioHttpClient()
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            http_client=self._http,
            # An explicit (non-empty) mapping: the SDK must not read TWILIO_EDGE/TWILIO_REGION
            # from os.environ (an empty one would make it fall back to os.environ).
            environment={"TWILIO_ACCOUNT_SID": settings.twilio_account_sid},
        )
        self._client.edge = None
        self._client.region = None
        self._client.api.base_url = settings.twilio_api_base
        self.from_number = settings.twilio_phone_number
        self.timeout = timeout

    async def create_call(
        self,
        *,
        to: str,
        url: str,
        status_callback: str,
        time_limit: int,
        ring_timeout: int = 30,
    ) -> CreatedCall:
        try:
            async with asyncio.timeout(self.timeout):
                call = await self._client.calls.create_async(
                    to=to,
                    from_=self.from_number,
                    url=url,
                    method="POST",
                    status_callback=status_callback,
                    status_callback_method="POST",
                    status_callback_event=STATUS_EVENTS,
                    time_limit=time_limit,
                    timeout=ring_timeout,
                    machine_detection="Enable",
                )
        except TwilioRestException as err:
            raise TwilioError(str(err.msg), status=err.status, code=err.code) from err
        except TimeoutError as err:
            raise TwilioError(f"Twilio did not answer within {self.timeout:g} s") from err
        except aiohttp.ClientError as err:
            raise TwilioError(f"cannot reach Twilio: {err}") from err
        return CreatedCall(sid=str(call.sid), status=str(call.status))

    async def end_call(self, sid: str) -> None:
        """Hang up an in-progress call (``Status=completed``)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.calls(sid).update_async(status="completed")
        except TwilioRestException as err:
            raise TwilioError(str(err.msg), status=err.status, code=err.code) from err
        except (TimeoutError, aiohttp.ClientError) as err:
            raise TwilioError(f"cannot end call {sid}: {err or 'timeout'}") from err

    async def close(self) -> None:
        await self._http.close()
