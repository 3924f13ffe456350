// AudioWorklet processor: microphone samples at the context's rate in, 20 ms PCM16 24 kHz frames
// out to the page (transferred, not copied), each with its RMS and peak level for the meter.
import { CaptureConverter } from "./pcm.js";

class Pcm16CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options?.processorOptions?.frameMs ?? 20;
    this.converter = new CaptureConverter(sampleRate, { frameMs });
    this.mono = new Float32Array(128);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0 || channels[0].length === 0) return true;
    let block = channels[0];
    if (channels.length > 1) {
      // Down-mix: the wire format is mono.
      if (this.mono.length !== block.length) this.mono = new Float32Array(block.length);
      this.mono.fill(0);
      for (const channel of channels) {
        for (let i = 0; i < channel.length; i++) this.mono[i] += channel[i] / channels.length;
      }
      block = this.mono;
    }
    for (const frame of this.converter.push(block)) {
      this.port.postMessage({ bytes: frame.bytes, rms: frame.rms, peak: frame.peak }, [frame.bytes.buffer]);
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16CaptureProcessor);
