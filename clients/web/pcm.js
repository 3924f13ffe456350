// PCM conversions for the Realtime wire format: mono PCM16, little-endian, 24 kHz.
//
// Pure functions and small classes with no DOM or Web Audio dependency, so the same module runs in
// the page, in the capture AudioWorklet and under Node (tests/test_browser.py checks it there).

export const WIRE_RATE = 24000;

/** Greatest common divisor of two positive integers. */
function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Streaming band-limited resampler (windowed-sinc interpolation, Blackman window).
 *
 * Output sample n sits at input position n * inRate / outRate (exact rational arithmetic, so no
 * drift over long sessions). When downsampling, the kernel's cutoff is lowered to the output's
 * Nyquist frequency (times `rolloff`), so microphone content above 12 kHz does not alias into the
 * speech band. The result does not depend on how the input is split into blocks.
 */
export class Resampler {
  constructor(inRate, outRate, { zeroCrossings = 16, rolloff = 0.9, resolution = 512 } = {}) {
    if (!(Number.isInteger(inRate) && inRate > 0 && Number.isInteger(outRate) && outRate > 0)) {
      throw new RangeError(`sample rates must be positive integers, got ${inRate} and ${outRate}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    this.passthrough = inRate === outRate;
    const g = gcd(inRate, outRate);
    this.num = inRate / g; // output n is at input position n * num / den
    this.den = outRate / g;
    this.cutoff = Math.min(1, outRate / inRate) * rolloff; // fraction of the input Nyquist frequency
    this.halfWidth = zeroCrossings / this.cutoff; // kernel half-width, in input samples
    this.resolution = resolution;
    const size = Math.ceil(this.halfWidth * resolution) + 2;
    this.table = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      const x = i / resolution;
      if (x >= this.halfWidth) break;
      const u = Math.PI * this.cutoff * x;
      const sinc = u === 0 ? 1 : Math.sin(u) / u;
      const w = x / this.halfWidth; // 0 at the centre, 1 at the edge
      const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
      this.table[i] = this.cutoff * sinc * blackman;
    }
    this.count = 0; // output samples produced so far
    const lead = Math.ceil(this.halfWidth);
    this.base = -lead; // absolute input index of pending[0]; the stream is silent before index 0
    this.pending = new Float32Array(lead);
  }

  /** Resample the next block of the stream; returns the output samples it completes. */
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    const merged = new Float32Array(this.pending.length + input.length);
    merged.set(this.pending);
    merged.set(input, this.pending.length);
    const end = this.base + merged.length; // one past the last available input index
    const { num, den, halfWidth, resolution, table, base } = this;
    const out = new Float32Array(Math.ceil((input.length * den) / num) + 2);
    let produced = 0;
    for (;;) {
      const whole = Math.floor((this.count * num) / den);
      const t = whole + (this.count * num - whole * den) / den;
      const hi = Math.floor(t + halfWidth);
      if (hi >= end || produced >= out.length) break;
      let acc = 0;
      let norm = 0;
      for (let k = Math.ceil(t - halfWidth); k <= hi; k++) {
        const x = Math.abs(t - k) * resolution;
        const i = x | 0;
        const h = table[i] + (table[i + 1] - table[i]) * (x - i);
        acc += merged[k - base] * h;
        norm += h;
      }
      out[produced++] = norm > 0 ? acc / norm : 0;
      this.count++;
    }
    const whole = Math.floor((this.count * num) / den);
    const next = whole + (this.count * num - whole * den) / den;
    const keepFrom = Math.min(end, Math.ceil(next - halfWidth));
    this.pending = merged.slice(keepFrom - base);
    this.base = keepFrom;
    return out.subarray(0, produced);
  }
}

/** float samples in [-1, 1] to PCM16 values (rounded, clipped): the inverse of pcm16ToFloat. */
export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.round(samples[i] * 32768);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

/** PCM16 values to little-endian bytes (the wire format), whatever the platform's byte order. */
export function pcm16ToBytes(values) {
  const bytes = new Uint8Array(values.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setInt16(i * 2, values[i], true);
  return bytes;
}

/** Little-endian PCM16 bytes to float samples in [-1, 1). */
export function pcm16BytesToFloat(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (data.length % 2) throw new RangeError(`PCM16 needs an even number of bytes, got ${data.length}`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Float32Array(data.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}

/** Bytes to base64 (btoa works on "binary strings"; build it in slices to bound the argument count). */
export function bytesToBase64(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Root-mean-square and peak of a block of float samples. */
export function levels(samples) {
  let sum = 0;
  let peak = 0;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i];
    sum += v * v;
    const a = v < 0 ? -v : v;
    if (a > peak) peak = a;
  }
  return { rms: samples.length ? Math.sqrt(sum / samples.length) : 0, peak };
}

/** dBFS of a linear level (-Infinity for digital silence). */
export function toDbfs(level) {
  return level > 0 ? 20 * Math.log10(level) : -Infinity;
}

/**
 * Microphone samples at the capture rate in, fixed-size PCM16 24 kHz frames out.
 *
 * push() takes any block size (an AudioWorklet delivers 128 samples) and returns the frames it
 * completed: { bytes: Uint8Array of frameSamples * 2 little-endian PCM16 bytes, rms, peak }.
 */
export class CaptureConverter {
  constructor(inRate, { frameMs = 20, outRate = WIRE_RATE } = {}) {
    if (!(frameMs > 0)) throw new RangeError("frameMs must be positive");
    this.resampler = new Resampler(Math.round(inRate), outRate);
    this.frameSamples = Math.round((outRate * frameMs) / 1000);
    this.frame = new Float32Array(this.frameSamples);
    this.filled = 0;
  }

  push(input) {
    const samples = this.resampler.process(input);
    const frames = [];
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(this.frameSamples - this.filled, samples.length - offset);
      this.frame.set(samples.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === this.frameSamples) {
        const { rms, peak } = levels(this.frame);
        frames.push({ bytes: pcm16ToBytes(floatToPcm16(this.frame)), rms, peak });
        this.filled = 0;
      }
    }
    return frames;
  }
}
