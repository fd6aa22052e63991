"""Greetings synthesized before anyone calls, so the persona speaks the moment the stream opens.

At start-up the voice server asks ElevenLabs (HTTP streaming, ``ulaw_8000``) for each active
persona's greeting in its default voice and keeps the audio, cut into ~1 s chunks with the text
spread over them (for marks and the heard-text record). A call whose greeting is cached plays it
with no TTS round trip; a miss (custom voice, new persona) falls back to the live socket and
fills the cache for the next call.
"""

from __future__ import annotations

import asyncpg
from elevenlabs.client import AsyncElevenLabs

from voice_pipeline.logs import get_logger
from voice_pipeline.settings import Settings

log = get_logger("voice_pipeline.greetings")

CHUNK_BYTES = 8000  # 1 s of μ-law

GreetingCache = dict[tuple[str, ...], list[tuple[bytes, int]]]


def chunk(audio: bytes, text: str) -> list[tuple[bytes, int]]:
    pieces = [audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)] or [b""]
    out, given = [], 0
    for n, piece in enumerate(pieces, 1):
        upto = round(len(text) * n / len(pieces))
        out.append((piece, upto - given))
        given = upto
    return out


async def warm(settings: Settings, pool: asyncpg.Pool, cache: GreetingCache) -> int:
    """Fill ``cache`` for every active persona with a greeting. Best effort; returns how many."""
    base = settings.elevenlabs_url.replace("wss://", "https://").replace("ws://", "http://")
    client = AsyncElevenLabs(api_key=settings.elevenlabs_api_key or "stand-in", base_url=base)
    rows = await pool.fetch(
        "SELECT default_voice_id, greeting FROM personas WHERE is_active AND greeting IS NOT NULL "
        "AND default_voice_id IS NOT NULL"
    )
    done = 0
    for row in rows:
        text = row["greeting"]
        try:
            audio = b"".join(
                [
                    c
                    async for c in client.text_to_speech.stream(
                        row["default_voice_id"],
                        text=text + " ",
                        model_id=settings.elevenlabs_model,
                        output_format="ulaw_8000",
                    )
                ]
            )
        except Exception as err:  # provider down at start-up: calls synthesize live instead
            log.warning("greeting_warmup_failed", error=type(err).__name__)
            return done
        cache[(row["default_voice_id"], text)] = chunk(audio, text + " ")
        done += 1
    log.info("greetings_ready", count=done)
    return done
