// Microphone capture: getUserMedia (echo cancellation, noise suppression, automatic gain on) into
// the PCM16 24 kHz AudioWorklet, which hands back 20 ms frames with their level.

export const MIC_CONSTRAINTS = {
  audio: {
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
    channelCount: { ideal: 1 },
  },
  video: false,
};

/** A getUserMedia / AudioContext failure, in words a person can act on. */
export function describeMicError(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return "Microphone access was denied. Allow the microphone for this site in your browser's address bar or site settings, then press Start again.";
    case "NotFoundError":
    case "DevicesNotFoundError":
      return "No microphone was found. Plug one in (or enable it in your system settings) and press Start again.";
    case "NotReadableError":
    case "TrackStartError":
      return "The microphone could not be opened: another application may be using it.";
    case "OverconstrainedError":
      return "This microphone does not support the audio settings the assistant needs.";
    case "SecurityError":
    case "InsecureContextError":
      return "Browsers allow the microphone only on https:// pages or on localhost. Open this page over HTTPS.";
    case "AbortError":
      return "Opening the microphone was interrupted. Press Start to try again.";
    default:
      return `The microphone could not be started: ${error?.message || error}.`;
  }
}

export class Microphone {
  /** onFrame({ bytes, rms, peak, capturedAt }); onEnded() when the device goes away. */
  constructor({ frameMs = 20, onFrame = () => {}, onEnded = () => {} } = {}) {
    this.frameMs = frameMs;
    this.onFrame = onFrame;
    this.onEnded = onEnded;
    this.stream = null;
    this.ctx = null;
    this.node = null;
    this.inputLatencyMs = 0;
  }

  get active() {
    return this.stream !== null;
  }

  async start() {
    if (this.stream) return;
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      const error = new Error("insecure context");
      error.name = "InsecureContextError";
      throw error;
    }
    const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    try {
      // The device's own rate: the worklet resamples to 24 kHz (band-limited) itself.
      const ctx = new (window.AudioContext || window.webkitAudioContext)({ latencyHint: "interactive" });
      await ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
      const source = ctx.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(ctx, "pcm16-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        channelCount: 1,
        channelCountMode: "explicit",
        processorOptions: { frameMs: this.frameMs },
      });
      // A silent path to the destination keeps the graph pulled in every browser.
      const sink = ctx.createGain();
      sink.gain.value = 0;
      source.connect(node);
      node.connect(sink);
      sink.connect(ctx.destination);
      const track = stream.getAudioTracks()[0];
      this.inputLatencyMs = (track.getSettings?.().latency || 0) * 1000;
      node.port.onmessage = ({ data }) => {
        // The frame's last sample reached the microphone about one input latency before now.
        this.onFrame({ ...data, capturedAt: performance.now() - this.inputLatencyMs });
      };
      track.addEventListener("ended", () => {
        if (this.stream === stream) {
          this.stop();
          this.onEnded();
        }
      });
      if (ctx.state === "suspended") await ctx.resume();
      this.stream = stream;
      this.ctx = ctx;
      this.node = node;
    } catch (error) {
      for (const t of stream.getTracks()) t.stop();
      throw error;
    }
  }

  stop() {
    if (this.node) this.node.port.onmessage = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.ctx?.close();
    this.stream = null;
    this.ctx = null;
    this.node = null;
  }
}
