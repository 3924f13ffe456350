// The page: wires the microphone, the websocket and the player to the conversation view.
import { Microphone, describeMicError } from "./mic.js";
import { WIRE_RATE, base64ToBytes, bytesToBase64, toDbfs } from "./pcm.js";
import { Player } from "./player.js";
import { RealtimeConnection, STARTING_UP, defaultUrl } from "./realtime.js";
import { WebRtcConnection, callsUrl } from "./webrtc.js";

const FRAME_MS = 20;
const STORE_INSTRUCTIONS = "voice.instructions";
const STORE_PIPELINE = "voice.pipeline";
const STORE_VOICE = "voice.voice";
const STORE_API_KEY = "voice.apiKey";
const STORE_TRANSPORT = "voice.transport"; // "websocket" (PCM in JSON) or "webrtc" (Opus tracks)
const MAX_BUFFERED_BYTES = 256 * 1024; // a stalled socket: skip audio rather than fall further behind

// Server stage timings (response.done -> response.metadata), in order, with a short label.
const STAGES = [
  ["end_of_turn_ms", "End of turn", "the silence that ends your turn"],
  ["transcript_ms", "Transcript", "final speech recognition"],
  ["llm_first_token_ms", "First token", "the language model starts its answer"],
  ["tts_first_audio_ms", "First audio", "speech synthesis of the first words"],
  ["first_audio_sent_ms", "Sent", "the first audio leaves the server"],
];

const $ = (id) => document.getElementById(id);

function formatMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return Math.abs(ms) >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Set a node's text only when it changes: a live region re-announces even the same words. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function store(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    /* private mode: settings last for this page only */
  }
}

function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

/** One message in the conversation list. */
class MessageView {
  constructor(list, role, itemId) {
    this.role = role;
    this.itemId = itemId;
    this.root = element("li", `message ${role}`);
    this.root.dataset.itemId = itemId;
    this.state = role === "user" ? "listening" : "thinking";
    const who = element("div", "who", role === "user" ? "You" : "Assistant");
    this.bubble = element("div", "bubble");
    this.text = element("p", "text");
    this.heard = element("span", "heard");
    this.unheard = element("span", "unheard");
    this.text.append(this.heard, this.unheard);
    this.bubble.append(this.text);
    if (role === "assistant") {
      const typing = element("span", "typing");
      typing.setAttribute("aria-label", "The assistant is thinking");
      typing.append(element("i"), element("i"), element("i"));
      this.bubble.append(typing);
    }
    this.note = element("span", "note");
    who.append(this.note);
    this.root.append(who, this.bubble);
    list.append(this.root);
    this.timers = [];
  }

  set state(value) {
    this.root.dataset.state = value;
    // Screen readers announce the message once it has settled, not every partial word.
    this.root.setAttribute("aria-busy", String(["listening", "partial", "thinking", "speaking"].includes(value)));
  }

  get state() {
    return this.root.dataset.state;
  }

  setNote(text) {
    this.note.textContent = text ? ` · ${text}` : "";
  }

  /** A typed message that waits for a session to be sent in (shown faint until then). */
  setUnsent(unsent) {
    if (unsent) this.root.dataset.unsent = "true";
    else delete this.root.dataset.unsent;
    this.setNote(unsent ? "not sent yet: it goes once connected" : "");
  }

  // --- user
  appendPartial(delta) {
    if (this.state === "final") return;
    this.heard.textContent += delta;
    this.state = "partial";
  }

  setFinal(text) {
    this.heard.textContent = text;
    this.state = "final";
    this.root.dataset.final = "true";
    this.setNote("");
  }

  // --- assistant
  /** Show `text` when its audio starts playing (at performance.now() time `at`). */
  revealAt(text, at) {
    const delay = at - performance.now();
    if (delay <= 5 && !this.unheardQueue) {
      this.reveal(text);
      return;
    }
    this.unheardQueue = (this.unheardQueue || "") + text;
    const timer = setTimeout(() => {
      this.timers = this.timers.filter((t) => t !== timer);
      this.unheardQueue = this.unheardQueue.slice(text.length);
      this.reveal(text);
    }, delay);
    this.timers.push(timer);
  }

  reveal(text) {
    this.heard.textContent += text;
    if (this.state === "thinking") this.state = "speaking";
  }

  /** Playback stopped: what was still waiting for its audio stays greyed out, unheard. */
  interrupt(playedMs) {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
    if (this.unheardQueue) this.addUnheard(this.unheardQueue);
    this.unheardQueue = "";
    this.interrupted = true;
    this.state = "interrupted";
    this.setNote(playedMs > 0 ? `interrupted after ${formatMs(playedMs)}` : "interrupted");
  }

  /** Text generated but never played: shown faint and shortened, in full on hover. */
  addUnheard(text) {
    this.unheardFull = (this.unheardFull || "") + text;
    const words = this.unheardFull.trim().split(/\s+/);
    this.unheard.textContent = ` ${words.slice(0, 12).join(" ")}${words.length > 12 ? " …" : ""}`;
    this.unheard.title = `Not spoken: ${this.unheardFull.trim()}`;
  }

  /** The whole transcript is known: make sure the visible text ends up complete once played. */
  complete(transcript, at) {
    if (this.interrupted) return;
    const finish = () => {
      const shown = this.heard.textContent;
      if (transcript && transcript.startsWith(shown.trim()) && transcript.length > shown.trim().length) {
        this.heard.textContent = transcript;
      }
      this.state = "done";
    };
    const delay = at - performance.now();
    if (delay > 5) this.timers.push(setTimeout(finish, delay));
    else finish();
  }

  /** The felt latency and the server's stage timings under the reply. */
  showMetrics({ feltMs, origin, metadata }) {
    if (!this.metrics) {
      this.metrics = element("div", "metrics");
      this.root.append(this.metrics);
    }
    const box = this.metrics;
    box.replaceChildren();
    if (Number.isFinite(feltMs)) {
      const felt = element("div", "felt");
      const value = element("span", "felt-value", formatMs(feltMs));
      value.dataset.testid = "latency";
      value.dataset.ms = String(Math.round(feltMs));
      const label = element("span", "felt-label",
        origin === "typed" ? "from sending your message to the first sound" : "from the end of your speech to the first sound");
      felt.append(value, label);
      box.append(felt);
    }
    const stages = STAGES.map(([key, name, help], index) => [key, name, help, Number.parseFloat(metadata?.[key]), index])
      .filter(([, , , ms]) => Number.isFinite(ms));
    if (stages.length) {
      const bar = element("div", "stagebar");
      bar.setAttribute("aria-hidden", "true");
      let previous = 0;
      stages.forEach(([, , , ms, index]) => {
        const segment = element("span", `segment s${index}`);
        segment.style.flexGrow = String(Math.max(0, ms - previous));
        previous = Math.max(previous, ms);
        bar.append(segment);
      });
      if (Number.isFinite(feltMs) && feltMs > previous) {
        const rest = element("span", "segment rest");
        rest.style.flexGrow = String(feltMs - previous);
        bar.append(rest);
      }
      const list = element("dl", "stages");
      const origin = metadata?.timing_origin === "response_start" ? "after the request reached the server"
        : "after the end of your speech reached the server";
      list.setAttribute("aria-label", `Server stage timings, ${origin}`);
      stages.forEach(([key, name, help, ms, index]) => {
        const row = element("div", `stage s${index}`);
        row.title = `${help}: ${formatMs(ms)} ${origin}`;
        row.dataset.stage = key;
        row.append(element("dt", "", name), element("dd", "", formatMs(ms)));
        list.append(row);
      });
      if (Number.isFinite(feltMs) && feltMs > previous) {
        const row = element("div", "stage rest");
        row.title = "The rest of the felt latency: the network both ways, the playback queue and the audio output";
        row.append(element("dt", "", "Network & playback"), element("dd", "", `+${formatMs(feltMs - previous)}`));
        list.append(row);
      }
      box.append(bar, list);
    }
  }
}

class App {
  constructor() {
    this.el = {
      connection: $("connection"),
      connectionText: $("connection-text"),
      connectionCountdown: $("connection-countdown"),
      retry: $("retry"),
      alert: $("alert"),
      alertText: $("alert-text"),
      turns: $("turns"),
      empty: $("empty"),
      conversation: $("conversation"),
      mic: $("mic"),
      micLabel: $("mic-label"),
      mute: $("mute"),
      level: $("level"),
      micStatus: $("mic-status"),
      composer: $("composer"),
      input: $("composer-input"),
      settings: $("settings"),
      openSettings: $("open-settings"),
      instructions: $("instructions"),
      pipeline: $("pipeline"),
      pipelineField: $("pipeline-field"),
      voice: $("voice"),
      voiceField: $("voice-field"),
      apiKey: $("api-key"),
      transport: $("transport"),
      sessionInfo: $("session-info"),
      modelName: $("model-name"),
      lastLatency: $("last-latency"),
      lastLatencyValue: $("last-latency-value"),
      toast: $("toast"),
    };
    this.session = null;
    this.defaultInstructions = null;
    this.sessions = 0;
    this.player = new Player({ onIdle: () => this.renderMic() });
    this.mic = new Microphone({
      frameMs: FRAME_MS,
      onFrame: (frame) => this.onMicFrame(frame),
      onEnded: () => {
        this.showAlert("The microphone was disconnected.");
        this.micStopped();
      },
    });
    this.muted = false;
    this.rtcSpeaking = false; // WebRTC: between output_audio_buffer.started and .stopped / .cleared
    this.level = 0;
    this.levelTarget = 0;
    this.stream = { samples: 0, frames: [] }; // audio appended on this connection: [{ end (sample), at }]
    this.messages = new Map(); // item id -> MessageView
    this.turns = new Map(); // user item id -> { speechEnd }
    this.responses = new Map(); // response id -> { turn, itemId, heardAt, metadata }
    this.pendingTurn = null; // the user turn the next response answers
    this.activeResponseId = null;
    this.interrupted = new Set(); // assistant items whose playback was cut
    this.duckedFor = null; // the person's turn the voice is lowered for, until it interrupts or ends
    this.latencies = [];
    this.silence = new Map(); // frame bytes -> base64 of silence
    this.retryTimer = null;
    this.connectionLog = []; // [{ state, retryInMs, refusal, at }]
    this.startingUp = false; // the server said it is loading its models
    this.unsent = []; // typed messages waiting for a session: [{ view, text }]
    this.typedCount = 0;
    this.connection = this.openConnection();
    this.bind();
    this.followConversation();
    this.renderMic();
  }

  /** `?transport=webrtc` in the page's address, or the one saved in Settings (the websocket by default). */
  get transport() {
    const chosen = new URLSearchParams(window.location.search).get("transport") || stored(STORE_TRANSPORT);
    return chosen === "webrtc" && window.RTCPeerConnection ? "webrtc" : "websocket";
  }

  get webrtc() {
    return this.connection instanceof WebRtcConnection;
  }

  /** A connection over the chosen transport, connecting. */
  openConnection() {
    const callbacks = {
      onState: (state) => this.onConnectionState(state),
      onEvent: (event) => this.onServerEvent(event),
      onOpen: () => this.onOpen(),
    };
    const connection = this.transport === "webrtc"
      ? new WebRtcConnection(callsUrl(window.location), { ...callbacks, apiKey: () => this.apiKey() })
      : new RealtimeConnection(defaultUrl(window.location), {
        ...callbacks,
        protocols: () => {
          const key = this.apiKey();
          return key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
        },
      });
    if (connection instanceof WebRtcConnection && this.mic.active) connection.setMicrophone(this.micTrack());
    connection.connect();
    return connection;
  }

  micTrack() {
    return this.mic.stream?.getAudioTracks()[0] ?? null;
  }

  /** For the end-to-end test and for curious people in the console. */
  get stats() {
    return {
      connection: this.connection.state,
      transport: this.webrtc ? "webrtc" : "websocket",
      framesSent: this.stream.frames.length,
      samplesSent: this.stream.samples,
      playedMs: this.player.playedTotalMs,
      latencies: [...this.latencies],
    };
  }

  // ------------------------------------------------------------------ UI wiring
  bind() {
    const { el } = this;
    el.mic.addEventListener("click", () => this.toggleMic());
    el.mute.addEventListener("click", () => this.setMuted(!this.muted));
    el.retry.addEventListener("click", () => this.connection.retryNow());
    $("alert-close").addEventListener("click", () => this.hideAlert());
    el.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = el.input.value.trim();
      if (text) this.sendText(text);
    });
    el.openSettings.addEventListener("click", () => this.openSettings());
    el.settings.addEventListener("close", () => {
      if (el.settings.returnValue === "apply") this.applySettings();
      el.openSettings.focus();
    });
    el.settings.addEventListener("click", (event) => {
      if (event.target === el.settings) el.settings.close("cancel"); // a click on the backdrop
    });
    $("close-settings").addEventListener("click", () => el.settings.close("cancel"));
    $("reset-instructions").addEventListener("click", () => {
      if (this.defaultInstructions !== null) el.instructions.value = this.defaultInstructions;
    });
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      const target = event.target instanceof HTMLElement ? event.target : null;
      if (event.key === "Escape") {
        // Esc stops the assistant from anywhere, the message box included (focus stays there after
        // a typed message), except in Settings, where it closes the dialog.
        if (!target?.closest("dialog") && (this.player.speaking || this.rtcSpeaking || this.activeResponseId)) {
          event.preventDefault();
          this.interruptAssistant();
        }
      } else if ((event.key === "m" || event.key === "M") && !target?.closest("input, textarea, select, dialog")) {
        if (this.mic.active) {
          event.preventDefault();
          this.setMuted(!this.muted);
        }
      }
    });
    const animate = () => {
      this.renderLevel();
      requestAnimationFrame(animate);
    };
    requestAnimationFrame(animate);
  }

  showAlert(message, kind = "error") {
    this.el.alertText.textContent = message;
    this.el.alert.dataset.kind = kind;
    this.el.alert.hidden = false;
  }

  hideAlert(kind) {
    if (!kind || this.el.alert.dataset.kind === kind) this.el.alert.hidden = true;
  }

  toast(message) {
    const { toast } = this.el;
    toast.textContent = message;
    toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      toast.hidden = true;
    }, 2500);
  }

  // ------------------------------------------------------------------ connection
  onConnectionState({ state, retryInMs, reason, refusal, everConnected }) {
    const { el } = this;
    this.connectionLog.push({ state, retryInMs, refusal, at: performance.now() });
    if (this.connectionLog.length > 100) this.connectionLog.shift();
    clearInterval(this.retryTimer);
    // A server loading its models refuses each attempt until it is ready: the attempts and the
    // waits between them show as one calm state, not as a flap between "Connecting" and "Offline".
    if (state === "waiting") this.startingUp = refusal === STARTING_UP;
    else if (state !== "connecting") this.startingUp = false;
    const shown = this.startingUp ? "starting" : state;
    if (el.connection.dataset.state !== shown) el.connection.dataset.state = shown;
    el.connection.title = this.startingUp ? "The voice server is loading its models: the page connects once it is ready" : "";
    el.retry.hidden = shown !== "waiting";
    setText(el.connectionCountdown, "");
    if (shown === "starting") {
      setText(el.connectionText, "Starting up…");
      this.hideAlert("connection");
    } else if (state === "connecting") {
      el.connectionText.textContent = everConnected ? "Reconnecting…" : "Connecting…";
    } else if (state === "open") {
      el.connectionText.textContent = "Connected";
      this.hideAlert("connection");
    } else if (state === "waiting") {
      const until = performance.now() + retryInMs;
      el.connectionText.textContent = everConnected ? "Offline" : "Unreachable";
      this.showAlert(everConnected
        ? `Lost the connection to the voice server: ${reason}. Reconnecting automatically…`
        : `Cannot reach the voice server at ${this.connection.url}. Is it running? If it requires an API key, enter it in Settings. Retrying automatically…`,
      "connection");
      // The countdown is for the eyes (aria-hidden): a live region ticking every second is noise.
      const tick = () => {
        el.connectionCountdown.textContent = ` · ${Math.max(0, Math.ceil((until - performance.now()) / 1000))} s`;
      };
      tick();
      this.retryTimer = setInterval(tick, 250);
      this.connectionLost();
    } else {
      el.connectionText.textContent = "Disconnected";
    }
    this.renderMic();
  }

  onOpen() {
    this.stream = { samples: 0, frames: [] };
    this.pendingTurn = null;
    this.activeResponseId = null;
  }

  /** The session is gone with the socket: stop its audio and close what was left open. */
  connectionLost() {
    this.player.stop();
    for (const view of this.messages.values()) {
      if (view.role === "assistant" && ["thinking", "speaking"].includes(view.state)) view.interrupt(0);
      if (view.role === "user" && view.state !== "final") view.setFinal(view.heard.textContent || "…");
    }
    this.activeResponseId = null;
  }

  send(event) {
    return this.connection.send(event);
  }

  // ------------------------------------------------------------------ microphone
  async toggleMic() {
    if (this.mic.active) {
      this.stopMic();
      return;
    }
    const { el } = this;
    el.mic.disabled = true;
    el.micStatus.textContent = "Starting the microphone…";
    try {
      await this.player.start(); // inside the click: browsers allow audio output after a gesture
      await this.mic.start();
      if (this.webrtc) {
        this.connection.setMicrophone(this.micTrack());
        this.connection.audio.play().catch(() => {}); // inside the click, as the player's start
      }
      this.hideAlert("mic");
    } catch (error) {
      this.showAlert(describeMicError(error), "mic");
    } finally {
      el.mic.disabled = false;
      this.renderMic();
    }
  }

  stopMic() {
    if (this.webrtc) {
      this.connection.setMicrophone(null); // its silent track lets the server hear the end of speech
      this.mic.stop();
      this.micStopped();
      return;
    }
    this.mic.stop();
    // Let the server's VAD hear the end of any speech in progress: a silence window's worth.
    const detection = this.session?.audio?.input?.turn_detection;
    const silenceMs = (detection?.silence_duration_ms ?? 1300) + 200; // semantic_vad: its longest window
    const frameBytes = (WIRE_RATE * FRAME_MS * 2) / 1000;
    for (let sent = 0; sent < silenceMs; sent += FRAME_MS) {
      this.appendAudio(new Uint8Array(frameBytes), performance.now(), true);
    }
    this.micStopped();
  }

  micStopped() {
    this.muted = false;
    this.levelTarget = 0;
    this.renderMic();
  }

  setMuted(muted) {
    if (!this.mic.active) return;
    this.muted = muted;
    const track = this.micTrack();
    if (this.webrtc && track) track.enabled = !muted; // a disabled track sends silence
    this.renderMic();
  }

  renderMic() {
    const { el } = this;
    const on = this.mic.active;
    el.mic.dataset.state = on ? (this.muted ? "muted" : "on") : "off";
    el.micLabel.textContent = on ? "Stop the microphone" : "Start the microphone";
    el.mic.title = on ? "Stop the microphone" : "Start the microphone";
    el.mute.disabled = !on;
    el.mute.setAttribute("aria-pressed", String(this.muted));
    el.mute.title = this.muted ? "Unmute the microphone (M)" : "Mute the microphone (M)";
    if (!on) el.micStatus.textContent = "Microphone off";
    else if (this.muted) el.micStatus.textContent = "Muted: the assistant cannot hear you";
    else if (this.player.speaking || this.rtcSpeaking) el.micStatus.textContent = "Assistant speaking";
    else el.micStatus.textContent = this.connection.open ? "Listening" : "Listening (offline)";
  }

  renderLevel() {
    // Fast attack, slow release, on a -60..0 dBFS scale.
    const target = this.mic.active ? Math.max(0, Math.min(1, (toDbfs(this.levelTarget) + 60) / 60)) : 0;
    this.level = target > this.level ? target : this.level * 0.9 + target * 0.1;
    const shown = this.muted ? this.level * 0.35 : this.level;
    this.el.mic.style.setProperty("--level", shown.toFixed(3));
    this.el.level.style.setProperty("--level", shown.toFixed(3));
    const percent = Math.round(this.level * 100);
    if (percent !== this.shownPercent) {
      this.shownPercent = percent;
      this.el.level.setAttribute("aria-valuenow", String(percent));
    }
  }

  onMicFrame({ bytes, rms, capturedAt }) {
    this.levelTarget = rms;
    this.appendAudio(bytes, capturedAt, this.muted);
  }

  /** Send one frame (silence when muted) and remember when its audio was captured. */
  appendAudio(bytes, capturedAt, silent) {
    if (this.webrtc) return; // the microphone's track carries the audio
    if (!this.connection.open || this.connection.buffered > MAX_BUFFERED_BYTES) return;
    let audio;
    if (silent) {
      audio = this.silence.get(bytes.length);
      if (!audio) this.silence.set(bytes.length, (audio = bytesToBase64(new Uint8Array(bytes.length))));
    } else {
      audio = bytesToBase64(bytes);
    }
    this.send({ type: "input_audio_buffer.append", audio });
    this.stream.samples += bytes.length / 2;
    this.stream.frames.push({ end: this.stream.samples, at: capturedAt });
    if (this.stream.frames.length > 6000) this.stream.frames.splice(0, 3000); // keep the last minute or two
  }

  /** performance.now() time at which stream position `audioMs` was captured, if still known. */
  capturedAt(audioMs) {
    const sample = (audioMs * WIRE_RATE) / 1000;
    const frames = this.stream.frames;
    let lo = 0;
    let hi = frames.length - 1;
    if (hi < 0 || sample > frames[hi].end || sample < frames[0].end - (WIRE_RATE * FRAME_MS) / 1000) return null;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].end < sample) lo = mid + 1;
      else hi = mid;
    }
    return frames[lo].at - ((frames[lo].end - sample) * 1000) / WIRE_RATE;
  }

  // ------------------------------------------------------------------ conversation
  messageView(itemId, role) {
    let view = this.messages.get(itemId);
    if (!view) {
      view = new MessageView(this.el.turns, role, itemId);
      this.messages.set(itemId, view);
      this.el.empty.hidden = true;
    }
    return view;
  }

  /** Keep the newest message in view, unless the person scrolled up to read. */
  followConversation() {
    const { conversation, turns } = this.el;
    let stick = true;
    conversation.addEventListener("scroll", () => {
      stick = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80;
    }, { passive: true });
    const follow = new ResizeObserver(() => {
      if (stick) conversation.scrollTop = conversation.scrollHeight;
    });
    follow.observe(turns);
    follow.observe(conversation);
  }

  divider(text) {
    if (!this.messages.size) return;
    this.el.turns.append(element("li", "divider", text));
  }

  /** A tool call or its output, as a line of the transcript (this page runs no tools: it shows them). */
  toolLine(text, kind) {
    this.el.turns.append(element("li", `tool ${kind}`, text));
    this.el.empty.hidden = true;
  }

  /** Stop the assistant's voice now, and tell the server how much of it was heard. */
  bargeIn() {
    if (!this.player.speaking) return null;
    const cut = this.player.stop();
    if (cut) {
      this.interrupted.add(cut.itemId);
      this.messages.get(cut.itemId)?.interrupt(cut.playedMs);
      // audio_end_ms is an integer (the server refuses a fraction, as OpenAI does)
      this.send({ type: "conversation.item.truncate", item_id: cut.itemId, content_index: 0, audio_end_ms: Math.floor(cut.playedMs) });
    }
    this.renderMic();
    return cut;
  }

  /** The person's turn `itemId` is over and did not interrupt the reply: its voice comes back. */
  unduckAfter(itemId) {
    if (this.duckedFor !== itemId) return;
    this.duckedFor = null;
    if (this.player.ducked) this.player.duck(false);
  }

  interruptAssistant() {
    // The cancel goes before the truncate: truncating the item a reply is speaking ends that reply
    // too, and a cancel after it would find no reply left to cancel.
    if (this.activeResponseId) {
      this.send({ type: "response.cancel", response_id: this.activeResponseId });
    }
    // Over WebRTC the server holds the voice not yet played: it drops it.
    if (this.webrtc && (this.rtcSpeaking || this.activeResponseId)) this.send({ type: "output_audio_buffer.clear" });
    this.bargeIn();
  }

  /** A typed message shows at once; it is sent now, or as soon as a session starts. */
  async sendText(text) {
    this.typedCount += 1;
    // The page names the item, so the server's echo of it lands in the view already shown.
    const itemId = `item_web_${Math.random().toString(36).slice(2, 10)}_${this.typedCount}`;
    const view = this.messageView(itemId, "user");
    view.setFinal(text);
    this.el.input.value = "";
    try {
      await this.player.start(); // inside the key press or click: browsers allow audio output after a gesture
    } catch {
      /* no audio output: the reply still shows as text */
    }
    if (!this.connection.open) {
      view.setUnsent(true);
      this.unsent.push({ view, text });
      return;
    }
    this.interruptAssistant();
    this.sendTyped([{ view, text }]);
  }

  /** The person's typed messages, then a request for the reply to them. */
  sendTyped(messages) {
    for (const { view, text } of messages) {
      this.send({
        type: "conversation.item.create",
        item: { id: view.itemId, type: "message", role: "user", content: [{ type: "input_text", text }] },
      });
      view.setUnsent(false);
      this.el.turns.append(view.root); // after what came while it waited, such as a reconnection's divider
    }
    this.send({ type: "response.create" });
    this.pendingTurn = { typed: true, speechEnd: performance.now() };
  }

  // ------------------------------------------------------------------ settings
  /** The API key: `?key=` in the page's address, or the one saved in Settings. */
  apiKey() {
    return new URLSearchParams(window.location.search).get("key") || stored(STORE_API_KEY) || "";
  }

  renderSettings() {
    const { el, session } = this;
    el.instructions.value = session?.instructions ?? stored(STORE_INSTRUCTIONS) ?? "";
    const pipelines = Array.isArray(session?.pipelines) ? session.pipelines : [];
    // Only offered once the server has more than one pipeline (the native one is still to come).
    el.pipelineField.hidden = pipelines.length < 2;
    if (pipelines.length >= 2) {
      el.pipeline.replaceChildren(...pipelines.map((entry) => {
        const id = typeof entry === "string" ? entry : entry.id ?? entry.name;
        const label = typeof entry === "string" ? entry : entry.name ?? entry.id;
        const option = element("option", "", label.charAt(0).toUpperCase() + label.slice(1));
        option.value = id;
        return option;
      }));
      el.pipeline.value = session.pipeline ?? stored(STORE_PIPELINE) ?? el.pipeline.options[0].value;
    }
    const voices = Array.isArray(session?.voices) ? session.voices : [];
    // Offered when the server has voices to choose from; OpenAI's names (alloy...) stand for its default.
    el.voiceField.hidden = voices.length < 2;
    if (voices.length >= 2) {
      el.voice.replaceChildren(...voices.map((id) => {
        const option = element("option", "", id);
        option.value = id;
        return option;
      }));
      const current = session.audio?.output?.voice;
      el.voice.value = voices.includes(current) ? current : voices[0];
      el.voice.dataset.shown = el.voice.value; // applied only when the person changes it
    }
    el.sessionInfo.textContent = session ? `Model ${session.model} · session ${session.id}` : "Not connected";
  }

  openSettings() {
    this.renderSettings();
    this.el.apiKey.value = stored(STORE_API_KEY) ?? "";
    this.el.transport.value = this.transport;
    this.el.settings.returnValue = ""; // Esc keeps the last value: it must not mean "apply"
    this.el.settings.showModal();
  }

  applySettings() {
    const { el, session } = this;
    const key = el.apiKey.value.trim();
    const transport = el.transport.value;
    if (key !== (stored(STORE_API_KEY) ?? "") || transport !== this.transport) {
      store(STORE_API_KEY, key || null);
      store(STORE_TRANSPORT, transport === "webrtc" ? transport : null);
      if (transport !== (this.webrtc ? "webrtc" : "websocket")) {
        this.connection.close();
        this.connection = this.openConnection();
      } else {
        this.connection.reconnect(); // the new session gets the instructions below from storage
      }
      const instructions = el.instructions.value.trim();
      if (instructions && instructions !== this.defaultInstructions) store(STORE_INSTRUCTIONS, instructions);
      return;
    }
    const update = { type: "realtime" };
    const instructions = el.instructions.value.trim();
    if (instructions && instructions !== session?.instructions) update.instructions = instructions;
    if (!el.pipelineField.hidden && el.pipeline.value !== session?.pipeline) update.pipeline = el.pipeline.value;
    const voice = el.voiceField.hidden ? null : el.voice.value;
    if (voice && voice !== el.voice.dataset.shown) {
      update.audio = { output: { voice } };
      store(STORE_VOICE, voice);
    }
    if (Object.keys(update).length === 1) return;
    if (update.instructions) store(STORE_INSTRUCTIONS, instructions === this.defaultInstructions ? null : instructions);
    if (update.pipeline) store(STORE_PIPELINE, update.pipeline);
    if (!this.send({ type: "session.update", session: update })) {
      this.showAlert("Not connected: the settings will be applied when the connection is back.", "connection");
    }
    this.settingsPending = true;
  }

  /** A new session: bring back what the person chose before (instructions, pipeline, voice). */
  restoreSettings(session) {
    const update = { type: "realtime" };
    const instructions = stored(STORE_INSTRUCTIONS);
    if (instructions && instructions !== session.instructions) update.instructions = instructions;
    const pipeline = stored(STORE_PIPELINE);
    const offered = (session.pipelines ?? []).map((p) => (typeof p === "string" ? p : p.id ?? p.name));
    if (pipeline && offered.length > 1 && offered.includes(pipeline) && pipeline !== session.pipeline) {
      update.pipeline = pipeline;
    }
    const voice = stored(STORE_VOICE);
    if (voice && (session.voices ?? []).includes(voice) && voice !== session.audio?.output?.voice) {
      update.audio = { output: { voice } };
    }
    if (Object.keys(update).length > 1) this.send({ type: "session.update", session: update });
  }

  // ------------------------------------------------------------------ server events
  onServerEvent(event) {
    const handler = this.handlers[event.type];
    if (handler) handler.call(this, event);
  }

  get handlers() {
    return HANDLERS;
  }
}

const HANDLERS = {
  "session.created"(event) {
    this.sessions += 1;
    if (this.sessions > 1) this.divider("Reconnected: a new conversation begins");
    this.session = event.session;
    if (this.defaultInstructions === null) this.defaultInstructions = event.session.instructions ?? "";
    this.el.modelName.textContent = event.session.model || "assistant";
    this.renderSettings();
    this.restoreSettings(event.session);
    if (this.unsent.length) this.sendTyped(this.unsent.splice(0)); // typed while there was no session
    this.renderMic();
  },

  "session.updated"(event) {
    this.session = event.session;
    if (this.settingsPending) this.toast("Settings applied");
    this.settingsPending = false;
    this.renderSettings();
  },

  "input_audio_buffer.speech_started"(event) {
    // The voice goes quieter: the server stops it (output_audio_buffer.cleared) if this is an
    // interruption, and not for a backchannel ("mm-hmm") or a noise.
    if (this.player.speaking) {
      this.player.duck(true);
      this.duckedFor = event.item_id;
    }
    const view = this.messageView(event.item_id, "user");
    view.state = "listening";
    view.setNote("listening…");
    this.turns.set(event.item_id, { itemId: event.item_id });
  },

  "input_audio_buffer.speech_stopped"(event) {
    const turn = this.turns.get(event.item_id) ?? { itemId: event.item_id };
    this.turns.set(event.item_id, turn);
    // When the person stopped talking, on this page's clock: the capture time of the audio the
    // server's VAD marks as the end of speech. Failing that, the arrival minus the silence window.
    const at = this.capturedAt(event.audio_end_ms);
    const silence = this.session?.audio?.input?.turn_detection?.silence_duration_ms ?? 500;
    turn.speechEnd = at ?? performance.now() - silence;
    this.pendingTurn = turn;
    this.messages.get(event.item_id)?.setNote("transcribing…");
  },

  "conversation.item.input_audio_transcription.delta"(event) {
    this.messageView(event.item_id, "user").appendPartial(event.delta);
  },

  "conversation.item.input_audio_transcription.completed"(event) {
    this.messageView(event.item_id, "user").setFinal(event.transcript);
    this.unduckAfter(event.item_id);
  },

  "output_audio_buffer.started"(event) {
    this.rtcSpeaking = true; // WebRTC only: the server plays the voice, and it is heard from now
    const response = this.responses.get(event.response_id);
    if (response && response.heardAt === null) {
      response.heardAt = performance.now();
      this.renderMetrics(event.response_id);
    }
    this.renderMic();
  },

  "output_audio_buffer.stopped"() {
    this.rtcSpeaking = false;
    this.renderMic();
  },

  "output_audio_buffer.cleared"() {
    this.rtcSpeaking = false;
    // The person interrupted the reply: stop it, and tell the server how much was heard.
    this.bargeIn();
    this.duckedFor = null;
  },

  "conversation.item.input_audio_transcription.failed"(event) {
    this.unduckAfter(event.item_id);
    const view = this.messageView(event.item_id, "user");
    view.setFinal(view.heard.textContent || "…");
    view.setNote("could not be transcribed");
  },

  "conversation.item.added"(event) {
    const { item } = event;
    if (item?.type === "function_call_output") {
      this.toolLine(`→ ${item.output}`, "output");
      return;
    }
    const part = item?.content?.[0];
    if (item?.role === "user" && part?.type === "input_text") {
      this.messageView(item.id, "user").setFinal(part.text ?? "");
    } else if (item?.role === "user" && part?.type === "input_audio") {
      this.messageView(item.id, "user");
    }
  },

  "response.created"(event) {
    this.activeResponseId = event.response.id;
    this.responses.set(event.response.id, { turn: this.pendingTurn, itemId: null, heardAt: null, metadata: null });
    this.pendingTurn = null;
  },

  "response.function_call_arguments.done"(event) {
    this.toolLine(`${event.name}(${event.arguments})`, "call");
  },

  "response.output_item.added"(event) {
    if (event.item?.type === "function_call") return;  // shown whole when its arguments are done
    const response = this.responses.get(event.response_id);
    if (response) response.itemId = event.item.id;
    this.messageView(event.item.id, "assistant");
  },

  "response.output_audio.delta"(event) {
    if (this.interrupted.has(event.item_id)) return;
    const chunk = this.player.enqueue(event.item_id, base64ToBytes(event.delta));
    const response = this.responses.get(event.response_id);
    if (chunk?.first && response && response.heardAt === null) {
      response.heardAt = chunk.heardAt;
      this.renderMetrics(event.response_id);
    }
    this.messageView(event.item_id, "assistant");
    this.renderMic();
  },

  "response.output_audio_transcript.delta"(event) {
    const view = this.messageView(event.item_id, "assistant");
    if (this.interrupted.has(event.item_id)) view.addUnheard(event.delta);
    else view.revealAt(event.delta, this.player.ctx ? this.player.queueEndPerf() : 0);
  },

  "response.output_text.delta"(event) {
    this.messageView(event.item_id, "assistant").reveal(event.delta);
  },

  "response.output_audio_transcript.done"(event) {
    const view = this.messageView(event.item_id, "assistant");
    view.complete(event.transcript, this.player.ctx ? this.player.queueEndPerf() : 0);
  },

  "response.output_text.done"(event) {
    this.messageView(event.item_id, "assistant").complete(event.text, 0);
  },

  "response.done"(event) {
    const { response } = event;
    if (this.activeResponseId === response.id) this.activeResponseId = null;
    const record = this.responses.get(response.id);
    if (record) record.metadata = response.metadata ?? {};
    const itemId = response.output?.[0]?.id ?? record?.itemId;
    const view = itemId ? this.messages.get(itemId) : null;
    if (response.status === "cancelled" && view && !view.interrupted) {
      if (!view.heard.textContent && !this.player.timeline.scheduledSamples(itemId)) {
        // Cancelled before it said anything (the person spoke again): nothing to show.
        view.root.remove();
        this.messages.delete(itemId);
        return;
      }
    }
    if (response.status === "failed") {
      const message = response.status_details?.error?.message ?? "the reply failed";
      this.showAlert(`The assistant could not answer: ${message}`, "server");
      view?.setNote("failed");
    }
    this.renderMetrics(response.id);
  },

  "conversation.item.truncated"(event) {
    const view = this.messages.get(event.item_id);
    if (view && !view.interrupted) view.interrupt(event.audio_end_ms);
  },

  error(event) {
    const error = event.error ?? {};
    // A stop that crossed the reply's end on the wire: the reply is over, which is what was asked.
    if (error.code === "response_cancel_not_active") return;
    this.showAlert(`The server reported an error: ${error.message ?? "unknown error"}${error.code ? ` (${error.code})` : ""}.`, "server");
  },
};

App.prototype.renderMetrics = function renderMetrics(responseId) {
  const record = this.responses.get(responseId);
  if (!record?.itemId) return;
  const view = this.messages.get(record.itemId);
  if (!view) return;
  const turn = record.turn;
  const feltMs = record.heardAt !== null && turn?.speechEnd !== undefined ? record.heardAt - turn.speechEnd : NaN;
  if (!Number.isFinite(feltMs) && !record.metadata) return;
  view.showMetrics({ feltMs, origin: turn?.typed ? "typed" : "speech", metadata: record.metadata });
  if (Number.isFinite(feltMs) && !record.counted) {
    record.counted = true;
    this.latencies.push(Math.round(feltMs));
    this.el.lastLatency.hidden = false;
    this.el.lastLatencyValue.textContent = formatMs(feltMs);
  }
};

window.voice = new App();
