"""Provider clients: push in, typed events out, reconnect inside, metered for the cost meter.

- ``stt.DeepgramSTT`` — the official deepgram-sdk (v7 ``listen.v1.connect``), μ-law passthrough.
- ``llm.LlmClient`` — the official ``openai.AsyncOpenAI`` against Cerebras or any compatible URL.
- ``tts.ElevenLabsTTS`` — ElevenLabs' multi-context WebSocket over ``websockets``: the official
  SDK has no async or multi-context WebSocket client (protocols.md §3.6), and one socket per call
  with a context per turn is what makes barge-in cheap.
"""
