"""Guards the browser softphone end to end, in Debian's headless Chromium: the page signs up,
picks a persona and calls; the microphone (a fake capture file of spoken audio) reaches the
voice pipeline as Twilio Media Streams through the Twilio stand-in's bridge; the spoken question
is transcribed, answered in speech the page receives and plays, and the page shows both sides
of the conversation and each turn's latency."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.engines_harness import found, words
from tests.voice_harness import VoiceRig
from voice_pipeline.sim.local import LocalEngines

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.engines  # playwright (the local extra) is imported only when run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUESTION = "How many push ups should I do every day?"
MIC_RATE = 48000


async def mic_file(path: Path, synth: object) -> Path:
    """What the fake microphone says: 7 s of room (the greeting plays), the question, quiet."""
    speech = await synth.synthesize(QUESTION, MIC_RATE)  # type: ignore[attr-defined]
    rng = np.random.default_rng(1)
    room = lambda s: rng.normal(0, 20, int(s * MIC_RATE))  # noqa: E731 - faint line noise
    pcm = np.concatenate([room(7.0), speech.astype(np.float64), room(40.0)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())
    return path


async def wait_for(page: Page, condition: str, timeout_s: float) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=250)
    except PlaywrightTimeout:
        state = await page.evaluate(
            "({status: softphone.status, error: softphone.error, sent: softphone.framesSent, "
            "got: softphone.framesReceived, transcript: softphone.transcript})"
        )
        raise AssertionError(f"timed out waiting for {condition!r}; page: {state}") from None


async def test_softphone_call_in_headless_chromium(
    engine_rig: VoiceRig,
    engines: LocalEngines,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    wav = await mic_file(tmp_path / "question.wav", engines.synthesizer)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            # The page's CSP forbids eval; Playwright's wait_for_function needs it.
            context = await browser.new_context(bypass_csp=True)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            await page.goto(f"{engine_rig.settings.public_base_url}/phone")
            await page.fill("#email", "softphone@example.com")
            await page.fill("#password", "softphone-password")
            await page.click("#signup")
            await wait_for(page, "window.softphone.status.startsWith('signed in')", 15)
            await page.select_option("#persona", "brad")
            await page.click("#call")
            await wait_for(page, "window.softphone.status === 'in call'", 20)
            # The question is heard, transcribed, and answered in speech after it.
            await wait_for(
                page,
                "window.softphone.transcript.some(r => r.speaker === 'caller') && "
                "window.softphone.transcript.at(-1).speaker !== 'caller' && "
                "window.softphone.latency.some(l => l.voice_to_voice_ms != null)",
                90,
            )
            # Let the answer play for a while, then hang up from the page.
            await page.wait_for_timeout(4000)
            await page.click("#hangup")
            await wait_for(page, "window.softphone.ended", 20)
            await page.wait_for_timeout(2000)  # the page's last poll of the call
            state = await page.evaluate(
                "({t: window.softphone.transcript, l: window.softphone.latency, "
                "sent: window.softphone.framesSent, got: window.softphone.received})"
            )
            shown = await page.inner_text("#transcript")
            latency_shown = await page.inner_text("#latency")
        finally:
            await browser.close()
    assert not errors, errors
    caller = [r for r in state["t"] if r["speaker"] == "caller"]
    persona = [r for r in state["t"] if r["speaker"] != "caller"]
    assert len(caller) == 1, state["t"]
    assert found(("how many", "push", "every", "day"), caller[0]["text"]) >= 3, caller
    answer = next(r for r in persona if r["start_ms"] > caller[0]["start_ms"])
    assert answer["text"] and answer["text"] in shown and caller[0]["text"] in shown
    assert "voice-to-voice" in latency_shown
    assert state["sent"] > 500  # > 10 s of microphone frames went out as Media Streams
    # The page received the persona's speech: greeting and answer, transcribable.
    received = bytes(b for frame in state["got"] for b in frame)
    assert len(received) > 8000 * 4
    heard = await engines.recognizer.final(received)
    assert len(words(heard) & words(answer["text"])) >= min(2, len(words(answer["text"]))), (
        heard,
        answer["text"],
    )
