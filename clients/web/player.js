// Playback of the assistant's PCM16 24 kHz audio: a scheduled, gap-free queue of AudioBuffers on
// one AudioContext clock, and an exact account of how much of each item has been played.
import { WIRE_RATE, pcm16BytesToFloat } from "./pcm.js";

/**
 * What was scheduled when, per assistant item, in samples of the wire rate (pure bookkeeping,
 * no Web Audio: the unit tests run it under Node).
 */
export class Timeline {
  constructor(rate = WIRE_RATE) {
    this.rate = rate;
    this.items = new Map(); // item id -> [{ start (s), samples }]
    this.end = 0; // clock time the last scheduled sample ends
    this.last = null; // the item scheduled most recently (more of it may still come)
  }

  /** Record `samples` of `itemId` starting at clock time `start` (s). */
  schedule(itemId, start, samples) {
    let segments = this.items.get(itemId);
    if (!segments) this.items.set(itemId, (segments = []));
    segments.push({ start, samples });
    this.last = itemId;
    this.end = Math.max(this.end, start + samples / this.rate);
  }

  /** Samples of `itemId` played by clock time `now`. */
  playedSamples(itemId, now) {
    let played = 0;
    for (const { start, samples } of this.items.get(itemId) ?? []) {
      played += Math.min(samples, Math.max(0, Math.round((now - start) * this.rate)));
    }
    return played;
  }

  playedMs(itemId, now) {
    return (this.playedSamples(itemId, now) * 1000) / this.rate;
  }

  scheduledSamples(itemId) {
    return (this.items.get(itemId) ?? []).reduce((sum, s) => sum + s.samples, 0);
  }

  /** The item sounding (or about to) at clock time `now`: the first one with samples still to play. */
  current(now) {
    for (const [itemId, segments] of this.items) {
      if (segments.some(({ start, samples }) => start + samples / this.rate > now)) return itemId;
    }
    return null;
  }

  /** Playback stopped at `now`: keep only what was played, so the counts freeze. */
  cut(now) {
    for (const [itemId, segments] of this.items) {
      const kept = [];
      for (const segment of segments) {
        const played = Math.min(segment.samples, Math.max(0, Math.round((now - segment.start) * this.rate)));
        if (played > 0) kept.push({ start: segment.start, samples: played });
      }
      this.items.set(itemId, kept);
    }
    this.end = Math.min(this.end, now);
  }

  /**
   * Forget the items played to the end by `now`, except the latest one: after an underrun more
   * of it can still come, and its played position must keep counting from its first sample.
   */
  prune(now) {
    for (const [itemId, segments] of this.items) {
      if (itemId !== this.last && segments.every(({ start, samples }) => start + samples / this.rate <= now)) this.items.delete(itemId);
    }
  }
}

/**
 * The playback queue. Chunks of one item are scheduled back to back on the sample clock (no gap,
 * no overlap, hence no clicks); after an underrun the next chunk starts `lead` seconds ahead.
 */
const DUCKED_GAIN = 0.3; // the voice's level while the person may be interrupting it

export class Player {
  /** `context`: an existing (e.g. Offline) AudioContext to play into, instead of a new one. */
  constructor({ lead = 0.04, onIdle = () => {}, context = null } = {}) {
    this.lead = lead;
    this.onIdle = onIdle;
    this.ctx = context;
    this.output = null;
    if (context) this._newOutput();
    this.timeline = new Timeline(WIRE_RATE);
    this.sources = new Map(); // AudioBufferSourceNode -> { start, samples }
    this.anchorFrame = 0; // context frame of a contiguous run's first sample
    this.anchorSamples = 0; // wire-rate samples scheduled in the run so far
    this.playedTotalMs = 0; // all assistant audio actually played in this page
  }

  /** Create or resume the AudioContext (call from a user gesture: autoplay policies). */
  async start() {
    if (!this.ctx) {
      const Context = window.AudioContext || window.webkitAudioContext;
      try {
        this.ctx = new Context({ sampleRate: WIRE_RATE, latencyHint: "interactive" });
      } catch {
        this.ctx = new Context({ latencyHint: "interactive" }); // the buffers are resampled by the browser
      }
      this._newOutput();
    }
    const offline = typeof OfflineAudioContext !== "undefined" && this.ctx instanceof OfflineAudioContext;
    if (this.ctx.state === "suspended" && !offline) await this.ctx.resume();
  }

  _newOutput() {
    this.output = this.ctx.createGain();
    this.output.connect(this.ctx.destination);
  }

  get now() {
    return this.ctx ? this.ctx.currentTime : 0;
  }

  /** Whether audio is playing or queued. */
  get speaking() {
    return this.ctx !== null && this.timeline.end > this.ctx.currentTime;
  }

  /** The page's performance.now() at which clock time `t` is heard (output latency included). */
  perfAt(t) {
    const ctx = this.ctx;
    const stamp = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (stamp && stamp.contextTime > 0 && stamp.performanceTime > 0) {
      return stamp.performanceTime + (t - stamp.contextTime) * 1000;
    }
    return performance.now() + (t - ctx.currentTime + (ctx.outputLatency || ctx.baseLatency || 0)) * 1000;
  }

  /** When (performance.now() time) audio queued after what is already scheduled would be heard. */
  queueEndPerf() {
    if (!this.ctx) return performance.now();
    return this.perfAt(Math.max(this.timeline.end, this.ctx.currentTime + this.lead));
  }

  /**
   * Queue PCM16 24 kHz bytes of `itemId`. Returns { start, heardAt, first }: the clock time it
   * starts, the performance.now() time it will be heard, and whether it is the item's first chunk.
   */
  enqueue(itemId, bytes) {
    const samples = pcm16BytesToFloat(bytes);
    if (!this.ctx || samples.length === 0) return null;
    const ctx = this.ctx;
    const first = this.timeline.scheduledSamples(itemId) === 0;
    // Start times in whole context frames, computed with a single rounding: chunks join sample
    // for sample (at 24 kHz the context needs no resampling at all).
    const rate = ctx.sampleRate;
    let start = (this.anchorFrame + (this.anchorSamples * rate) / WIRE_RATE) / rate;
    if (start < ctx.currentTime + 0.005) {
      // Nothing queued (or we fell behind): start a new contiguous run slightly ahead of the clock.
      this.anchorFrame = Math.ceil((ctx.currentTime + this.lead) * rate);
      this.anchorSamples = 0;
      start = this.anchorFrame / rate;
    }
    const buffer = ctx.createBuffer(1, samples.length, WIRE_RATE);
    buffer.copyToChannel(samples, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    source.start(start);
    this.sources.set(source, { start, samples: samples.length });
    source.onended = () => {
      this.sources.delete(source);
      source.disconnect();
      this.playedTotalMs += (samples.length * 1000) / WIRE_RATE;
      if (this.sources.size === 0) {
        this.timeline.prune(this.ctx.currentTime);
        this.onIdle();
      }
    };
    this.anchorSamples += samples.length;
    this.timeline.schedule(itemId, start, samples.length);
    return { start, heardAt: this.perfAt(start), first };
  }

  /** Samples of `itemId` played so far, in ms. */
  playedMs(itemId) {
    return this.ctx ? this.timeline.playedMs(itemId, this.ctx.currentTime) : 0;
  }

  /** Lower the voice while the person may be interrupting (`on`), or bring it back. */
  duck(on) {
    if (!this.ctx || !this.output) return;
    const now = this.ctx.currentTime;
    this.output.gain.cancelScheduledValues(now);
    this.output.gain.setValueAtTime(this.output.gain.value, now);
    this.output.gain.linearRampToValueAtTime(on ? DUCKED_GAIN : 1, now + 0.05);
    this.ducked = on;
  }

  /**
   * Stop at once (a 10 ms fade, no click) and drop the queue. Returns { itemId, playedMs } for
   * the item that was sounding, or null when nothing was.
   */
  stop() {
    if (!this.ctx) return null;
    const now = this.ctx.currentTime;
    const itemId = this.timeline.current(now);
    const result = itemId === null ? null : { itemId, playedMs: Math.floor(this.timeline.playedMs(itemId, now)) };
    for (const [source, { start, samples }] of this.sources) {
      source.onended = null;
      source.stop(now + 0.012);
      this.playedTotalMs += (Math.min(samples, Math.max(0, (now - start) * WIRE_RATE)) * 1000) / WIRE_RATE;
    }
    this.sources.clear();
    const fading = this.output;
    fading.gain.cancelScheduledValues(now);
    fading.gain.setValueAtTime(fading.gain.value, now);
    fading.gain.linearRampToValueAtTime(0, now + 0.01);
    setTimeout(() => fading.disconnect(), 100);
    this._newOutput();
    this.ducked = false;
    this.timeline.cut(now);
    this.anchorFrame = 0;
    this.anchorSamples = 0;
    return result;
  }
}
