"""One call, from ``start`` to hang-up: the path of design.md §3–7 in one place.

Twilio's socket feeds the codec; caller audio goes straight to STT; STT events, TTS events,
mark echoes and a 1 s tick go to the turn machine, one at a time, from one queue; its actions
are carried out here: a reply streams LLM text clause by clause into a TTS context, TTS audio
goes through the pacer to Twilio with a mark per chunk, a barge-in sends ``clear``, cancels the
LLM stream and the TTS context, and drops late audio by turn. Transcript and latency rows are
written as they happen by one writer task; the end of the call flushes them and closes the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import websockets
from websockets.asyncio.server import ServerConnection

from voice_pipeline.clauses import ClauseSplitter
from voice_pipeline.db.calls import finalize_call, upsert_breakdown
from voice_pipeline.db.session_store import CallContext, save_metrics
from voice_pipeline.logs import get_logger
from voice_pipeline.meter import BudgetSignal, CostMeter
from voice_pipeline.metrics import Registry
from voice_pipeline.playback import OutFrame, OutMark, Pacer, TurnLedger
from voice_pipeline.providers.llm import LlmClient, LlmUsage
from voice_pipeline.providers.stt import DeepgramSTT
from voice_pipeline.providers.tts import ElevenLabsTTS, TtsAudio, TtsEvent, TtsFinal
from voice_pipeline.settings import Rates
from voice_pipeline.turns import (
    Action,
    CallStarted,
    DtmfPressed,
    EndRequested,
    Event,
    Final,
    HangUp,
    Interim,
    Interrupt,
    Notice,
    PersonaAudioStarted,
    PersonaTurnDone,
    Reply,
    Say,
    SpeechStarted,
    Tick,
    TurnConfig,
    TurnMachine,
    UserUtterance,
)
from voice_pipeline.twilio_stream import (
    Dtmf,
    Mark,
    Media,
    Stop,
    StreamError,
    TwilioStreamProtocol,
)

log = get_logger("voice_pipeline.session")

BUDGET_WARNING = (
    "Quick heads-up: we're almost at the budget for this call, so we'll need to wrap up soon."
)
BUDGET_GOODBYE = (
    "Looks like we've reached the budget for this call, so I have to stop here. Talk soon, bye!"
)


STT_DOWN_LINE = "I'm so sorry, I can't hear you properly right now. Let's talk again soon, bye!"


class _OutOfBudget(Exception):
    pass


class VoiceMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.live_calls = self.registry.gauge("callmeback_voice_live_calls", "Calls in progress")
        self.calls = self.registry.counter(
            "callmeback_voice_calls_total", "Calls by end reason", ("reason",)
        )
        self.frames_in = self.registry.counter(
            "callmeback_voice_frames_in_total", "Media frames received from Twilio"
        )
        self.frames_out = self.registry.counter(
            "callmeback_voice_frames_out_total", "Media frames sent to Twilio"
        )
        self.late_dropped = self.registry.counter(
            "callmeback_voice_late_audio_dropped_total", "TTS chunks of interrupted turns dropped"
        )
        self.bad_frames = self.registry.counter(
            "callmeback_voice_bad_frames_total", "Twilio frames refused", ("kind",)
        )
        self.stage = self.registry.histogram(
            "callmeback_voice_stage_ms", "Per-turn latency by stage (ms)", ("stage",)
        )
        self.interrupts = self.registry.counter("callmeback_voice_interrupts_total", "Barge-ins")
        self.loop_lag = self.registry.histogram(
            "callmeback_voice_loop_lag_ms",
            "Event-loop lag: how late a 50 ms timer fires (ms)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )
        self.stuck_audio = self.registry.counter(
            "callmeback_voice_audio_not_sent_total", "Watchdog: queued audio overdue by > 1 s"
        )


@dataclass
class _TurnTimes:
    speech_end: float | None = None
    stt_final: float | None = None
    llm_first_token: float | None = None
    tts_first_byte: float | None = None
    first_media: float | None = None
    interrupted: bool = False


@dataclass
class SessionDeps:
    pool: asyncpg.Pool
    metrics: VoiceMetrics
    make_stt: Callable[..., DeepgramSTT]
    make_tts: Callable[..., ElevenLabsTTS]
    llm: LlmClient
    turn_config: Callable[[CallContext], TurnConfig]
    rates: Rates | None = None
    greeting_cache: dict[tuple[str, str], list[tuple[bytes, int]]] = field(default_factory=dict)
    lead_ms: float = 120.0
    tick_s: float = 0.25


class CallSession:
    def __init__(
        self, deps: SessionDeps, ws: ServerConnection, proto: TwilioStreamProtocol, ctx: CallContext
    ) -> None:
        self.deps = deps
        self.ws = ws
        self.proto = proto
        self.ctx = ctx
        self.t0 = time.monotonic()
        self.machine = TurnMachine(deps.turn_config(ctx))
        self.events: asyncio.Queue[Event | TtsEvent | None] = asyncio.Queue()
        self.pacer = Pacer(lead_ms=deps.lead_ms)
        self.pacer_wake = asyncio.Event()
        self.ledgers: dict[int, TurnLedger] = {}
        self.turn_times: dict[int, _TurnTimes] = {}
        self.live_turn: int | None = None  # turn whose audio may play
        self.dead_turns: set[int] = set()  # interrupted: their late audio is dropped
        self.llm_tasks: dict[int, asyncio.Task[None]] = {}
        self.chunk_seq: dict[int, int] = {}
        self.say_kind: dict[int, str] = {}
        self.history: list[dict[str, str]] = [{"role": "system", "content": ctx.system_prompt}]
        self.transcript_seq = 0
        self.writes: asyncio.Queue[tuple[str, tuple[Any, ...]] | None] = asyncio.Queue()
        self.end_reason = "stopped"
        self.ended = asyncio.Event()
        self._speech_end: float | None = None
        self._utterance_start: float | None = None  # the caller's current utterance began
        self._provider_down = False
        self.stt = deps.make_stt(
            endpointing_ms=ctx.endpointing_ms, on_event=self.events.put_nowait, clock=self.now
        )
        self.tts = deps.make_tts(
            voice_id=ctx.voice_id,
            voice_settings=ctx.voice_settings,
            on_event=self.events.put_nowait,
        )
        self.greeting_key = (ctx.voice_id, ctx.greeting or "")
        self._greeting_chunks: list[tuple[bytes, int]] = []  # this call's greeting, as heard
        budget = ctx.budget_cents * 1_000_000 if ctx.budget_cents is not None else None
        self.meter = (
            CostMeter(deps.rates, budget, ctx.warn_percent, ctx.auto_cutoff)
            if deps.rates is not None
            else None
        )
        self._stt_billed = 0.0

    def now(self) -> float:
        return (time.monotonic() - self.t0) * 1000

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> str:
        m = self.deps.metrics
        m.live_calls.inc()
        self.stt.start()
        tasks = [
            asyncio.create_task(c, name=n)
            for c, n in (
                (self._read_twilio(), "twilio-reader"),
                (self._main(), "main"),
                (self._pace(), "pacer"),
                (self._tick(), "ticker"),
                (self._writer(), "db-writer"),
            )
        ]
        try:
            with contextlib.suppress(ConnectionError):
                await self.tts.connect()  # warm before the greeting
            self.events.put_nowait(CallStarted(self.now()))
            if self.meter is not None:
                self._budget(self.meter.telephony_until(0))
            done, _ = await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None:
                    log.error("session_task_failed", task=t.get_name(), error=repr(t.exception()))
        finally:
            await self._shutdown(tasks)
            m.live_calls.dec()
            m.calls.inc(self.end_reason)
            self.ended.set()
        return self.end_reason

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        for task in self.llm_tasks.values():
            task.cancel()
        for task in tasks:
            if task.get_name() != "db-writer":
                task.cancel()
        await asyncio.gather(*self.llm_tasks.values(), *tasks[:-1], return_exceptions=True)
        await asyncio.gather(self.stt.close(), self.tts.close(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.ws.close()
        # The persona turn that was playing when the call ended: record what was heard.
        if self.live_turn is not None:
            self._record_persona(self.live_turn, interrupted=True)
        if self.meter is not None:
            self._budget(self.meter.telephony_until(self.now() / 1000))
            if self.stt.audio_seconds > self._stt_billed:  # the last partial second
                self.meter.stt_seconds(self.stt.audio_seconds - self._stt_billed)
                self._stt_billed = self.stt.audio_seconds
        self._flush_costs()
        self.writes.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tasks[-1], 10)
        await self._close_books()

    async def _close_books(self) -> None:
        duration = round(self.now() / 1000)
        latencies = [
            t.first_media - t.speech_end
            for t in self.turn_times.values()
            if t.first_media is not None and t.speech_end is not None and not t.interrupted
        ]
        try:
            async with self.deps.pool.acquire() as conn, conn.transaction():
                await finalize_call(
                    conn,
                    self.ctx.call_id,
                    status="completed",
                    duration_seconds=duration,
                    rates=self.deps.rates,
                )
                # If the status callback closed the books first, our last events landed after
                # it: the breakdown is the sum of events, so compute it again.
                await upsert_breakdown(conn, self.ctx.call_id)
            await save_metrics(
                self.deps.pool,
                self.ctx.call_id,
                turns=sum(1 for k in self.say_kind.values() if k == "reply"),
                interrupts=self.machine.interrupts,
                avg_response_ms=int(sum(latencies) / len(latencies)) if latencies else None,
            )
        except (OSError, asyncpg.PostgresError) as err:
            log.error("close_books_failed", error=repr(err))

    # ------------------------------------------------------------------ Twilio in
    async def _read_twilio(self) -> None:
        m = self.deps.metrics
        try:
            async for frame in self.ws:
                try:
                    event = self.proto.receive(frame)
                except StreamError as err:
                    m.bad_frames.inc(type(err).__name__)
                    log.warning(
                        "twilio_frame_refused", error=type(err).__name__, detail=str(err)[:120]
                    )
                    continue
                if isinstance(event, Media):
                    m.frames_in.inc()
                    await self.stt.send(event.payload)
                elif isinstance(event, Mark):
                    self._mark_echoed(event.name)
                elif isinstance(event, Dtmf):
                    self.events.put_nowait(DtmfPressed(self.now(), event.digit))
                    self._write_transcript("dtmf", event.digit, self.now(), None, False, None)
                elif isinstance(event, Stop):
                    self.end_reason = "caller_hung_up"
                    return
        except websockets.ConnectionClosed:
            pass
        if self.end_reason == "stopped":
            self.end_reason = "socket_closed"

    def _mark_echoed(self, name: str) -> None:
        turn_s, _, _ = name.partition(":")
        try:
            turn = int(turn_s.lstrip("t"))
        except ValueError:
            return
        ledger = self.ledgers.get(turn)
        if ledger is None or not ledger.echoed(name):
            return
        if name.endswith(":end") and turn == self.live_turn and not ledger.cleared:
            self.events.put_nowait(PersonaTurnDone(self.now(), turn))

    # ------------------------------------------------------------------ the one consumer
    async def _main(self) -> None:
        while True:
            event = await self.events.get()
            if event is None:
                return
            if isinstance(event, TtsAudio):
                self._tts_audio(event)
                continue
            if isinstance(event, TtsFinal):
                self._tts_final(event)
                continue
            if isinstance(event, Final) and event.text:
                self._final_heard(event)
            elif isinstance(event, SpeechStarted | Interim) and self._utterance_start is None:
                self._utterance_start = event.t
            if isinstance(event, PersonaTurnDone) and event.turn == self.live_turn:
                self.live_turn = None
                self._record_persona(event.turn, interrupted=False)
            for action in self.machine.handle(event):
                if await self._act(action):
                    return

    async def _act(self, action: Action) -> bool:
        """Carry out one action. True when the call must end now."""
        if isinstance(action, UserUtterance):
            start = self._utterance_start if self._utterance_start is not None else action.t
            end = self._speech_end if self._speech_end is not None else action.t
            self._write_transcript("caller", action.text, min(start, end), end, False, None)
            self._utterance_start = None
            self.history.append({"role": "user", "content": action.text})
        elif isinstance(action, Reply):
            self._begin_turn(action.turn, "reply")
            times = self.turn_times[action.turn]
            times.stt_final = self.now()
            times.speech_end = self._speech_end or times.stt_final
            self.llm_tasks[action.turn] = asyncio.create_task(
                self._reply(action.turn), name=f"llm-{action.turn}"
            )
        elif isinstance(action, Say):
            self._begin_turn(action.turn, action.kind)
            await self._say(action.turn, action.text, action.kind)
        elif isinstance(action, Interrupt):
            await self._interrupt(action.turn)
        elif isinstance(action, HangUp):
            self.end_reason = action.reason
            log.info("hanging_up", reason=action.reason)
            return True
        return False

    def _final_heard(self, event: Final) -> None:
        # End of caller speech: where its last word ended (stream time mapped to our clock);
        # failing that, when the final arrived minus the endpointing silence.
        if event.speech_end is not None:
            self._speech_end = event.speech_end
        else:
            self._speech_end = max(0.0, event.t - self.ctx.endpointing_ms)

    def _begin_turn(self, turn: int, kind: str) -> None:
        self.live_turn = turn
        self.ledgers[turn] = TurnLedger(turn)
        self.turn_times[turn] = _TurnTimes()
        self.say_kind[turn] = kind
        self.chunk_seq[turn] = 0

    async def _reply(self, turn: int) -> None:
        cid = f"t{turn}"
        times = self.turn_times[turn]
        splitter = ClauseSplitter()
        ledger = self.ledgers[turn]
        messages = list(self.history)
        usage = LlmUsage()
        try:
            async for text in self.deps.llm.stream(
                messages,
                max_tokens=self.ctx.max_tokens,
                temperature=self.ctx.temperature,
                turn_usage=usage,
            ):
                if times.llm_first_token is None:
                    times.llm_first_token = self.now()
                for clause in splitter.push(text):
                    if not await self._speak(turn, clause):
                        raise _OutOfBudget
                    ledger.add_text(clause)
            for clause in splitter.flush():
                if not await self._speak(turn, clause):
                    raise _OutOfBudget
                ledger.add_text(clause)
        except _OutOfBudget:
            pass  # the goodbye is on its way (EndRequested): stop buying text
        except asyncio.CancelledError:
            raise
        except Exception as err:  # LLM down after the SDK's retries: say so, don't go silent
            log.error("llm_failed", turn=turn, error=type(err).__name__)
            if not ledger.text:
                fallback = "Sorry, I lost my train of thought. Could you say that again?"
                with contextlib.suppress(ConnectionError):
                    if await self._speak(turn, fallback):
                        ledger.add_text(fallback)
        finally:
            if self.meter is not None and (usage.input_tokens or usage.output_tokens):
                self._budget(self.meter.llm_tokens(usage.input_tokens, usage.output_tokens))
        if not ledger.text:
            self.events.put_nowait(PersonaTurnDone(self.now(), turn))  # nothing to say
        with contextlib.suppress(ConnectionError):
            await self.tts.end(cid)

    async def _say(self, turn: int, text: str, kind: str) -> None:
        ledger = self.ledgers[turn]
        ledger.add_text(text + " ")
        cached = self.deps.greeting_cache.get(self.greeting_key) if kind == "greeting" else None
        if cached:  # the greeting is ready before the call: no TTS round trip
            times = self.turn_times[turn]
            times.tts_first_byte = self.now()
            for audio, chars in cached:
                self._enqueue(turn, audio, chars)
            self._end_audio(turn)
            return
        try:
            await self._speak(turn, text + " ", force=kind in ("goodbye", "greeting"))
            await self.tts.end(f"t{turn}")
        except ConnectionError:
            log.error("tts_unavailable", turn=turn)
            self.events.put_nowait(PersonaTurnDone(self.now(), turn))

    async def _interrupt(self, turn: int) -> None:
        self.deps.metrics.interrupts.inc()
        self.dead_turns.add(turn)
        if self.live_turn == turn:
            self.live_turn = None
        times = self.turn_times.get(turn)
        if times is not None:
            times.interrupted = True
        ledger = self.ledgers.get(turn)
        dropped = self.pacer.drop_turn(turn)
        if ledger is not None:
            ledger.clear()
        # Clear Twilio's buffer only if some audio of the turn went out.
        if times is not None and times.first_media is not None:
            await self._send(self.proto.clear())
            self.pacer.reset_playout(self.now())
        task = self.llm_tasks.pop(turn, None)
        if task is not None:
            task.cancel()
        with contextlib.suppress(ConnectionError):
            await self.tts.cancel(f"t{turn}")
        log.info(
            "barge_in",
            turn=turn,
            frames_dropped=dropped,
            heard_chars=ledger.heard_chars if ledger else 0,
        )
        self._record_persona(turn, interrupted=True)

    # ------------------------------------------------------------------ TTS in
    def _turn_of(self, cid: str) -> int | None:
        try:
            return int(cid.lstrip("t"))
        except ValueError:
            return None

    def _tts_audio(self, ev: TtsAudio) -> None:
        turn = self._turn_of(ev.context)
        if turn is None or turn in self.dead_turns or turn not in self.ledgers:
            self.deps.metrics.late_dropped.inc()
            return
        times = self.turn_times[turn]
        if times.tts_first_byte is None:
            times.tts_first_byte = self.now()
        if self.say_kind.get(turn) == "greeting":
            self._greeting_chunks.append((ev.audio, ev.chars))
        self._enqueue(turn, ev.audio, ev.chars)

    def _enqueue(self, turn: int, audio: bytes, chars: int) -> None:
        seq = self.chunk_seq[turn]
        self.chunk_seq[turn] = seq + 1
        name = f"t{turn}:{seq}"
        self.ledgers[turn].chunk(name, chars)
        self.pacer.push_audio(turn, audio, name)
        self.pacer_wake.set()

    def _tts_final(self, ev: TtsFinal) -> None:
        turn = self._turn_of(ev.context)
        if turn is None or turn in self.dead_turns or turn not in self.ledgers:
            return
        if self.say_kind.get(turn) == "greeting":
            # A whole greeting this call synthesized: the next call plays it from the cache.
            if self._greeting_chunks and len(self.deps.greeting_cache) < 256:
                self.deps.greeting_cache.setdefault(self.greeting_key, self._greeting_chunks)
        self._end_audio(turn)

    def _end_audio(self, turn: int) -> None:
        name = f"t{turn}:end"
        self.ledgers[turn].chunk(name, 10**6)
        self.pacer.end_turn(turn, name)
        self.pacer_wake.set()

    # ------------------------------------------------------------------ Twilio out
    async def _pace(self) -> None:
        m = self.deps.metrics
        while True:
            now = self.now()
            for out in self.pacer.due(now):
                if out.turn in self.dead_turns:
                    continue
                if isinstance(out, OutFrame):
                    times = self.turn_times.get(out.turn)
                    if times is not None and times.first_media is None:
                        times.first_media = self.now()
                        self.events.put_nowait(PersonaAudioStarted(times.first_media, out.turn))
                        self._observe(out.turn, times)
                    await self._send(self.proto.media(out.audio))
                    m.frames_out.inc()
                elif isinstance(out, OutMark):
                    await self._send(self.proto.mark(out.name))
            nxt = self.pacer.next_due_ms(self.now())
            self.pacer_wake.clear()
            timeout = None if nxt is None else max(0.0, (nxt - self.now()) / 1000) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pacer_wake.wait(), timeout)

    async def _send(self, frame: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(frame)

    def _observe(self, turn: int, t: _TurnTimes) -> None:
        stage = self.deps.metrics.stage
        if t.speech_end is not None and t.first_media is not None:
            stage.observe(t.first_media - t.speech_end, "voice_to_voice")
        if t.stt_final is not None and t.llm_first_token is not None:
            stage.observe(t.llm_first_token - t.stt_final, "llm_first_token")
        if t.tts_first_byte is not None and t.first_media is not None:
            stage.observe(t.first_media - t.tts_first_byte, "tts_to_media")
        if self.say_kind.get(turn) == "reply":
            self._write_latency(turn, t)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.deps.tick_s)
            self.events.put_nowait(Tick(self.now()))
            await self.stt.keepalive_if_idle()
            self._meter_tick()
            # A provider that stays down ends the call politely instead of leaving it deaf/mute.
            if self.stt.failed.is_set() and not self._provider_down:
                self._provider_down = True
                log.error("stt_unavailable_ending_call")
                self.events.put_nowait(EndRequested(self.now(), STT_DOWN_LINE, "stt_unavailable"))
            elif self.tts.failed and not self._provider_down:
                self._provider_down = True
                log.error("tts_unavailable_ending_call")
                self.events.put_nowait(EndRequested(self.now(), "", "tts_unavailable"))
            # Watchdog 1: audio queued whose time to go out passed long ago was not sent.
            nxt = self.pacer.next_due_ms(self.now())
            if nxt is not None and self.now() - nxt > 1000:
                self.deps.metrics.stuck_audio.inc()
                log.error("audio_not_sent", pending_frames=self.pacer.pending_frames())
                self.pacer_wake.set()
            # Watchdog 2: a persona turn that produced no audio for 15 s is over.
            turn = self.live_turn
            t = self.turn_times.get(turn) if turn is not None else None
            if (
                t is not None
                and t.first_media is None
                and t.stt_final is not None
                and self.now() - t.stt_final > 15_000
            ):
                log.error("turn_stalled", turn=turn)
                self.events.put_nowait(PersonaTurnDone(self.now(), turn))

    # ------------------------------------------------------------------ costs and budget
    def _meter_tick(self) -> None:
        if self.meter is None:
            return
        self._budget(self.meter.telephony_until(self.now() / 1000))
        delta = self.stt.audio_seconds - self._stt_billed
        if delta >= 1.0:  # Deepgram bills per second streamed; events per second, not per frame
            self._stt_billed += delta
            self._budget(self.meter.stt_seconds(delta))
        self._flush_costs()

    def _flush_costs(self) -> None:
        if self.meter is None:
            return
        events = self.meter.take_pending()
        if events:
            self.writes.put_nowait(("__costs__", tuple(events)))

    def _budget(self, signal: BudgetSignal) -> None:
        if signal is BudgetSignal.WARN:
            self.events.put_nowait(Notice(self.now(), BUDGET_WARNING, "budget_warning"))
        elif signal is BudgetSignal.EXHAUSTED:
            log.info(
                "budget_reached", total_microcents=self.meter.total_microcents if self.meter else 0
            )
            self.events.put_nowait(EndRequested(self.now(), BUDGET_GOODBYE, "budget"))

    async def _speak(self, turn: int, text: str, *, force: bool = False) -> bool:
        """Send ``text`` to TTS for ``turn`` if the budget allows it (goodbyes always go)."""
        if self.meter is not None:
            if not force and not self.meter.can_afford(self.meter.tts_cost(len(text))):
                if not self.meter.exhausted:
                    self.meter.exhausted = True
                    self._budget(BudgetSignal.EXHAUSTED)
                return False
            self._budget(self.meter.tts_characters(len(text)))
        await self.tts.speak(f"t{turn}", text)
        return True

    def end(self, line: str, reason: str) -> None:
        """Ask the call to end (budget, shutdown): the persona says ``line`` first."""
        self.events.put_nowait(EndRequested(self.now(), line, reason))

    # ------------------------------------------------------------------ persistence
    def _record_persona(self, turn: int, *, interrupted: bool) -> None:
        ledger = self.ledgers.pop(turn, None)
        if ledger is None:
            return
        heard = ledger.heard_text if interrupted else ledger.text.strip()
        if heard:
            self.history.append(
                {"role": "assistant", "content": heard + ("…" if interrupted else "")}
            )
        t = self.turn_times.get(turn)
        start = t.first_media if t and t.first_media is not None else self.now()
        if heard or ledger.text:
            cut = interrupted and heard != ledger.text.strip()
            self._write_transcript("persona", heard, start, self.now(), cut, turn)

    def _write_transcript(
        self,
        speaker: str,
        text: str,
        start: float,
        end: float | None,
        interrupted: bool,
        turn: int | None,
    ) -> None:
        seq = self.transcript_seq
        self.transcript_seq += 1
        self.writes.put_nowait(
            (
                "INSERT INTO call_transcripts (call_id, seq, turn_id, speaker, text, start_ms,"
                " end_ms, interrupted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT DO NOTHING",
                (
                    self.ctx.call_id,
                    seq,
                    turn,
                    speaker,
                    text,
                    int(start),
                    int(end) if end is not None else None,
                    interrupted,
                ),
            )
        )

    def _write_latency(self, turn: int, t: _TurnTimes) -> None:
        def ms(v: float | None) -> int | None:
            return int(v) if v is not None else None

        self.writes.put_nowait(
            (
                "INSERT INTO call_turn_latencies (call_id, turn_id, speech_end_ms, stt_final_ms, "
                "llm_first_token_ms, tts_first_byte_ms, first_media_ms) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (call_id, turn_id) DO NOTHING",
                (
                    self.ctx.call_id,
                    turn,
                    ms(t.speech_end),
                    ms(t.stt_final),
                    ms(t.llm_first_token),
                    ms(t.tts_first_byte),
                    ms(t.first_media),
                ),
            )
        )

    async def _writer(self) -> None:
        """Writes in order; a database blip is retried, never blocks the call."""
        while True:
            item = await self.writes.get()
            if item is None:
                return
            sql, args = item
            for attempt in range(3):
                try:
                    if sql == "__costs__":  # one batch of cost events
                        await self.deps.pool.executemany(
                            "INSERT INTO call_cost_events (call_id, seq, provider, unit, quantity,"
                            " cost_microcents, rate_version_id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                            " ON CONFLICT (call_id, seq) DO NOTHING",
                            [
                                (
                                    self.ctx.call_id,
                                    e.seq,
                                    e.provider,
                                    e.unit,
                                    e.quantity,
                                    e.cost_microcents,
                                    self.ctx.rate_version_id,
                                )
                                for e in args
                            ],
                        )
                    else:
                        await self.deps.pool.execute(sql, *args)
                    break
                except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as err:
                    log.warning("db_write_retry", attempt=attempt, error=type(err).__name__)
                    await asyncio.sleep(0.2 * (attempt + 1))
                except asyncpg.PostgresError as err:
                    log.error("db_write_failed", error=repr(err))
                    break
