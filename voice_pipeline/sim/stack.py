"""All four stand-ins in one process, sharing the scripted caller's ScriptBook.

Used by ``callmeback sim``, ``callmeback up`` (when keys are missing), the end-to-end tests and
the benchmark (which runs it in a separate process from the server under test). With
``engines`` (sim/local), real speech and a real model answer behind the same protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from voice_pipeline.settings import Settings
from voice_pipeline.sim.deepgram import DeepgramSim
from voice_pipeline.sim.elevenlabs import ElevenLabsSim
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.llm import LlmSim
from voice_pipeline.sim.local import LocalEngines
from voice_pipeline.sim.signals import ScriptBook
from voice_pipeline.sim.twilio import TwilioSim
from voice_pipeline.sim.twilio_media import CallerScript, MediaStreamCaller, Utterance


@dataclass
class Latencies:
    """Realistic defaults for benchmarks (tests use zeros)."""

    deepgram: Latency = field(default_factory=Latency)
    llm: Latency = field(default_factory=Latency)
    elevenlabs: Latency = field(default_factory=Latency)


class SimStack:
    def __init__(
        self,
        settings: Settings,
        *,
        latencies: Latencies | None = None,
        ring_delay: float = 0.3,
        default_script: CallerScript | None = None,
        engines: LocalEngines | None = None,
    ) -> None:
        lat = latencies or Latencies()
        self.settings = settings
        self.engines = engines or LocalEngines()
        self.book = ScriptBook()
        self.twilio = TwilioSim(
            settings.twilio_account_sid, settings.twilio_auth_token, ring_delay=ring_delay
        )
        self.caller = MediaStreamCaller(
            settings.twilio_auth_token, self.book, default_script=default_script
        )
        self.twilio.on_stream = self.caller
        # Not part of Twilio's API: lets `callmeback call` tell the stand-in's caller what to say.
        self.twilio.app.router.add_post("/_sim/callers", self._register_caller)
        # Not part of Twilio's API either: the browser softphone's line (see Handset).
        self.twilio.app.router.add_get("/_sim/phone", self.caller.phone_socket)
        eng = self.engines
        self.deepgram = DeepgramSim(
            api_key=settings.deepgram_api_key,
            book=self.book,
            latency=lat.deepgram,
            recognizer=eng.recognizer,
            detector=eng.detector,
        )
        self.llm = LlmSim(
            api_key=settings.llm_api_key,
            latency=lat.llm,
            models=(settings.llm_model, "gpt-oss-120b", "local"),
            engine=eng.llm,
        )
        self.elevenlabs = ElevenLabsSim(
            api_key=settings.elevenlabs_api_key,
            latency=lat.elevenlabs,
            synthesizer=eng.synthesizer,
            # Piper wants whole clauses (prosody); the tone voice is cut into ~40-char chunks.
            chunk_chars=1000 if eng.synthesizer is not None else 40,
        )
        self._runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}

    async def _register_caller(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            utterances = [
                Utterance(
                    str(u["text"]),
                    after_silence=float(u.get("after_silence", 0.6)),
                    barge_in_after=u.get("barge_in_after"),
                )
                for u in body["utterances"]
            ]
            if len(utterances) > 50 or any(len(u.text) > 500 for u in utterances):
                raise ValueError("at most 50 utterances of at most 500 characters")
            script = CallerScript(
                utterances=utterances,
                hang_up_after=float(body.get("hang_up_after", 1.5)),
                max_seconds=float(body.get("max_seconds", 120)),
            )
            number = str(body["to"])
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"bad caller script: {err}"}, status=400)
        if self.engines.synthesizer is not None:  # the caller speaks real words
            for u in utterances:
                u.ulaw = await self.engines.synthesizer.speak_ulaw(u.text)
        self.caller.scripts[number] = script
        return web.json_response({"to": number, "utterances": len(utterances)}, status=201)

    async def start(
        self, host: str = "127.0.0.1", ports: dict[str, int] | None = None
    ) -> dict[str, str]:
        ports = {**self.settings.sim_ports, **(ports or {})}
        apps = {
            "twilio": self.twilio.app,
            "deepgram": self.deepgram.app,
            "llm": self.llm.app,
            "elevenlabs": self.elevenlabs.app,
        }
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, host, ports[name])
            try:
                await site.start()
            except OSError:
                await runner.cleanup()
                await self.stop()
                raise
            self._runners.append(runner)
            port = runner.addresses[0][1]
            scheme = "ws" if name in ("deepgram", "elevenlabs") else "http"
            self.urls[name] = f"{scheme}://{host}:{port}" + ("/v1" if name == "llm" else "")
        return self.urls

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self.engines.close()
