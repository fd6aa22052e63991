// The softphone page: sign in, pick a persona, call. The call is placed through the control
// API exactly as the frontend does; the Twilio stand-in rings this page (its /_sim/phone
// socket) instead of a handset, and bridges the microphone into the Media Stream.
"use strict";

const $ = (id) => document.getElementById(id);
const state = (window.softphone = {
  status: "signed out", error: null, token: null, callId: null, number: null,
  framesSent: 0, framesReceived: 0, received: [], transcript: [], latency: [], ended: false,
});
let config = null, ws = null, ctx = null, node = null, mic = null, poller = null;

function setStatus(s) { state.status = s; $("status").textContent = s; }
function setError(e) { state.error = e; $("error").textContent = e || ""; }

function ulawToFloat(u) {
  u = ~u & 0xff;
  const sign = u & 0x80, exp = (u >> 4) & 7, mant = u & 0x0f;
  let s = ((mant << 3) + 0x84) << exp;
  s -= 0x84;
  return (sign ? -s : s) / 32768;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || r.status + " " + r.statusText);
  return data;
}

async function signIn(register) {
  setError(null);
  try {
    const creds = { email: $("email").value.trim(), password: $("password").value };
    const data = await api("POST", register ? "/api/auth/register" : "/api/auth/login", creds);
    state.token = data.token;
    const { personas } = await api("GET", "/api/personas");
    $("persona").replaceChildren(...personas.map((p) => new Option(p.name, p.id)));
    $("login").hidden = true; $("dial").hidden = false;
    setStatus("signed in as " + creds.email);
  } catch (e) { setError(e.message); }
}

function render(detail) {
  state.transcript = detail.transcript; state.latency = detail.latency;
  $("transcript").replaceChildren(...detail.transcript.map((row) => {
    const p = document.createElement("p");
    p.className = row.speaker === "caller" ? "caller" : "persona";
    p.textContent = (row.speaker === "caller" ? "you" : row.speaker) + ": " + row.text;
    if (row.interrupted) { const c = document.createElement("span"); c.className = "cut"; c.textContent = " [interrupted]"; p.append(c); }
    return p;
  }));
  $("latency").replaceChildren(...detail.latency.filter((l) => l.voice_to_voice_ms != null).map((l) => {
    const d = document.createElement("div");
    d.textContent = `turn ${l.turn_id}: voice-to-voice ${l.voice_to_voice_ms} ms`;
    return d;
  }));
}

async function poll() {
  if (!state.callId) return;
  try {
    const detail = await api("GET", "/api/calls/" + state.callId);
    render(detail);
    if (!detail.call.is_live && state.ended) { clearInterval(poller); poller = null; }
  } catch (e) { setError(e.message); }
}

async function call() {
  setError(null);
  $("call").disabled = true;
  Object.assign(state, { ended: false, callId: null, framesSent: 0, framesReceived: 0, received: [] });
  try {
    config = config || (await api("GET", "/phone/config"));
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/phone/worklet.js");
    node = new AudioWorkletNode(ctx, "phone-io", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    ctx.createMediaStreamSource(mic).connect(node);
    node.connect(ctx.destination);
    await ctx.resume();
    state.number = "+1555020" + String(Math.floor(Math.random() * 10000)).padStart(4, "0");
    ws = new WebSocket(config.bridge + "?to=" + encodeURIComponent(state.number));
    ws.binaryType = "arraybuffer";
    let inCall = false;
    node.port.onmessage = (e) => {
      if (inCall && ws.readyState === WebSocket.OPEN) { ws.send(e.data); state.framesSent++; }
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") {
        const bytes = new Uint8Array(e.data);
        const pcm = new Float32Array(bytes.length);
        for (let i = 0; i < bytes.length; i++) pcm[i] = ulawToFloat(bytes[i]);
        node.port.postMessage(pcm, [pcm.buffer]);
        state.framesReceived++;
        if (state.received.length < 6000) state.received.push(Array.from(bytes));
        return;
      }
      const msg = JSON.parse(e.data);
      if (msg.type === "ready") placeCall();
      else if (msg.type === "connected") { inCall = true; setStatus("in call"); $("hangup").disabled = false; }
      else if (msg.type === "clear") node.port.postMessage("clear");
      else if (msg.type === "ended") { inCall = false; finish("call ended"); }
    };
    ws.onclose = () => { if (!state.ended) finish("line closed"); };
    setStatus("dialing");
  } catch (e) { setError(e.message); finish("idle"); }
}

async function placeCall() {
  try {
    const data = await api("POST", "/api/calls/trigger", { persona_id: $("persona").value, phone_number: state.number });
    state.callId = data.call.id;
    setStatus("ringing");
    poller = setInterval(poll, 500);
  } catch (e) { setError(e.message); finish("idle"); }
}

function hangup() { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "hangup" })); }

function finish(status) {
  state.ended = true;
  setStatus(status);
  $("call").disabled = false; $("hangup").disabled = true;
  if (mic) mic.getTracks().forEach((t) => t.stop());
  if (ws && ws.readyState === WebSocket.OPEN) ws.close();
  setTimeout(() => { if (ctx) ctx.close(); poll(); }, 1500);
}

$("signin").onclick = () => signIn(false);
$("signup").onclick = () => signIn(true);
$("call").onclick = call;
$("hangup").onclick = hangup;
