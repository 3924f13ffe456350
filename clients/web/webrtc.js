// WebRTC to /v1/realtime/calls: the same events, on the `oai-events` data channel; the microphone and
// the voice on Opus tracks (the browser's own echo cancellation, jitter buffer and playback).
// Same interface as RealtimeConnection (realtime.js), so the page runs either.

import { backoffMs } from "./realtime.js";

/** http(s)://host/v1/realtime/calls for the page's own origin. */
export function callsUrl(location) {
  return `${location.protocol}//${location.host}/v1/realtime/calls`;
}

export class WebRtcConnection {
  constructor(url, { onState = () => {}, onEvent = () => {}, onOpen = () => {}, apiKey = () => "" } = {}) {
    this.url = url;
    this.apiKey = apiKey;
    this.onState = onState;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.pc = null;
    this.channel = null;
    this.sender = null;
    this.microphone = null; // the track sent while the microphone is on
    this.silent = null; // the track sent while it is off: the server's VAD hears the end of speech
    this.audio = new Audio();
    this.audio.autoplay = true;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.everConnected = false;
    this.state = "closed";
  }

  get open() {
    return this.channel !== null && this.channel.readyState === "open";
  }

  /** Bytes queued on the data channel but not yet sent. */
  get buffered() {
    return this.channel ? this.channel.bufferedAmount : 0;
  }

  async connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    this.timer = null;
    this._setState("connecting");
    const pc = new RTCPeerConnection();
    const channel = pc.createDataChannel("oai-events");
    this.pc = pc;
    this.channel = channel;
    this.sender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
    this.sender.replaceTrack(this.microphone ?? this._silentTrack());
    pc.ontrack = (event) => {
      this.audio.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    };
    let opened = false;
    const lost = (reason, refusal = null) => {
      if (this.pc !== pc) return;
      this._drop();
      if (this.stopped) this._setState("closed");
      else this._scheduleRetry(opened || refusal ? reason : `the server does not answer (${reason})`, refusal);
    };
    channel.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.everConnected = true;
      this._setState("open");
      this.onOpen();
    };
    channel.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    };
    channel.onclose = () => lost("the connection dropped");
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") lost("the connection dropped");
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const key = this.apiKey();
      const response = await fetch(this.url, {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", ...(key ? { Authorization: `Bearer ${key}` } : {}) },
      });
      if (!response.ok) {
        // A refused call (503 while the models load, at the session limit) says why, as a websocket's error does.
        const text = await response.text();
        let error = null;
        try {
          error = JSON.parse(text).error ?? null;
        } catch {
          /* not JSON */
        }
        lost(`the server refused the call: ${error?.message ?? `HTTP ${response.status} ${text}`.trim()}`,
          typeof error === "object" ? error?.code ?? null : null);
        return;
      }
      if (this.pc !== pc) return;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (error) {
      lost(`the call failed: ${error.message}`);
    }
  }

  /** The microphone's track to send (null: silence). */
  setMicrophone(track) {
    this.microphone = track;
    this.sender?.replaceTrack(track ?? this._silentTrack());
  }

  retryNow() {
    if (this.pc) return;
    this.attempt = 0;
    this.connect();
  }

  reconnect() {
    this._drop();
    this.attempt = 0;
    this.connect();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this._drop();
    this._setState("closed");
  }

  /** Send one client event; false when the data channel is not open (the event is dropped). */
  send(event) {
    if (!this.open) return false;
    this.channel.send(JSON.stringify(event));
    return true;
  }

  _silentTrack() {
    if (!this.silent) {
      const ctx = new AudioContext();
      this.silent = ctx.createMediaStreamDestination().stream.getAudioTracks()[0];
    }
    return this.silent;
  }

  _drop() {
    const { pc, channel } = this;
    this.pc = null;
    this.channel = null;
    this.sender = null;
    if (channel) channel.onclose = null;
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
    }
  }

  _scheduleRetry(reason, refusal = null) {
    const retryInMs = backoffMs(this.attempt);
    this.attempt += 1;
    this._setState("waiting", { retryInMs, reason, refusal });
    this.timer = setTimeout(() => this.connect(), retryInMs);
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.onState({ state, attempt: this.attempt, everConnected: this.everConnected, ...extra });
  }
}
