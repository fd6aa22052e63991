// The softphone's audio: microphone -> 8 kHz μ-law frames of 160 bytes (20 ms) to the page,
// and the persona's 8 kHz audio (from the page) -> the speakers at the context's rate.
// Resampling is done here so any AudioContext rate works (Firefox cannot mix rates).

function linToUlaw(s) {
  const BIAS = 0x84, CLIP = 32635;
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  let exp = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exp > 0; exp--, mask >>= 1) {}
  const mant = (s >> (exp + 3)) & 0x0f;
  return ~(sign | (exp << 4) | mant) & 0xff;
}

class PhoneIO extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 8000; // input samples per 8 kHz sample
    this.acc = 0; this.sum = 0; this.n = 0;
    this.frame = new Uint8Array(160); this.fill = 0;
    this.ring = new Float32Array(8000 * 8); this.r = 0; this.w = 0; this.pos = 0;
    this.port.onmessage = (e) => {
      if (e.data === "clear") { this.r = this.w; this.pos = 0; return; }
      const pcm = e.data; // Float32Array, 8 kHz
      for (let i = 0; i < pcm.length; i++) this.ring[(this.w + i) % this.ring.length] = pcm[i];
      this.w += pcm.length;
      if (this.w - this.r > this.ring.length) this.r = this.w - this.ring.length;
    };
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      for (let i = 0; i < input.length; i++) {
        // Box-filter decimation: average the input samples that make one 8 kHz sample.
        this.sum += input[i]; this.n++; this.acc += 1;
        if (this.acc >= this.ratio) {
          this.acc -= this.ratio;
          const v = Math.max(-1, Math.min(1, this.sum / this.n));
          this.sum = 0; this.n = 0;
          this.frame[this.fill++] = linToUlaw(Math.round(v * 32767));
          if (this.fill === 160) {
            this.port.postMessage(this.frame.slice(0));
            this.fill = 0;
          }
        }
      }
    }
    const out = outputs[0];
    const step = 8000 / sampleRate;
    const len = this.ring.length;
    for (let i = 0; i < out[0].length; i++) {
      let v = 0;
      if (this.w - this.r >= 2) {
        const a = this.ring[this.r % len], b = this.ring[(this.r + 1) % len];
        v = a + (b - a) * this.pos;
        this.pos += step;
        while (this.pos >= 1) { this.pos -= 1; this.r++; }
      }
      for (let c = 0; c < out.length; c++) out[c][i] = v;
    }
    return true;
  }
}

registerProcessor("phone-io", PhoneIO);
