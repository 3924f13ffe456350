// The websocket to /v1/realtime: JSON events both ways, and reconnection with backoff.

/** Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to `max` ms. */
export function backoffMs(attempt, { base = 500, max = 15000, random = Math.random } = {}) {
  const delay = Math.min(max, base * 2 ** Math.max(0, attempt));
  return Math.round(delay * (0.8 + 0.4 * random()));
}

/** ws(s)://host/v1/realtime for the page's own origin, or the `?server=` override. */
export function defaultUrl(location) {
  const override = new URLSearchParams(location.search).get("server");
  if (override) return override;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime`;
}

/** The server is loading its models: it says so and closes, and will be ready shortly. */
export const STARTING_UP = "models_loading";
const STARTING_UP_MAX_MS = 2000; // a starting server is polled calmly, but not kept waiting once it is ready

/**
 * One logical connection that survives drops. Callbacks:
 *   onState({ state, attempt, retryInMs, reason, refusal, everConnected })
 *                    state: connecting | open | waiting | closed; refusal: the code of the error a
 *                    server sent instead of a session (STARTING_UP while it loads its models)
 *   onEvent(event)   every server event of a session, parsed
 *   onOpen()         each time a (new) session starts
 * The connection is "open" once the server has started a session (its first event is not an error),
 * not when the socket opens: a server that is starting up accepts the socket and then refuses it.
 * `protocols()` gives the websocket subprotocols for each attempt (the API key can change).
 */
export class RealtimeConnection {
  constructor(url, { onState = () => {}, onEvent = () => {}, onOpen = () => {}, protocols = () => ["realtime"] } = {}) {
    this.url = url;
    this.protocols = protocols;
    this.onState = onState;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.everConnected = false;
    this.state = "closed";
  }

  /** A session is running: events sent now reach it. */
  get open() {
    return this.state === "open" && this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    this.timer = null;
    this._setState("connecting");
    let socket;
    try {
      socket = new WebSocket(this.url, this.protocols());
    } catch (error) {
      this._scheduleRetry(`the address ${this.url} is not valid (${error.message})`);
      return;
    }
    this.socket = socket;
    let opened = false;
    let refusal = null; // the error a server sends before it closes instead of starting a session
    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket) return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (this.state !== "open") {
        if (event.type === "error") {
          refusal = event.error ?? {};
          return;
        }
        this.attempt = 0;
        this.everConnected = true;
        this._setState("open");
        this.onOpen();
      }
      this.onEvent(event);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) {
        this._setState("closed");
        return;
      }
      const said = close.reason || refusal?.message ? `: ${close.reason || refusal.message}` : "";
      let reason;
      if (!opened) reason = "the server does not answer";
      else if (close.code === 1013 || refusal) reason = `the server asked to retry later${said}`;
      else reason = `the connection dropped${close.code && close.code !== 1000 ? ` (code ${close.code})` : ""}${said}`;
      this._scheduleRetry(reason, refusal?.code ?? null);
    };
  }

  /** Reconnect now instead of waiting for the backoff. */
  retryNow() {
    if (this.socket) return;
    this.attempt = 0;
    this.connect();
  }

  /** Drop the current socket (if any) and open a new one now, e.g. with a new API key. */
  reconnect() {
    const old = this.socket;
    this.socket = null;
    if (old) old.close(1000, "reconnecting");
    this.attempt = 0;
    this.connect();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "bye");
    else this._setState("closed");
  }

  /** Send one client event; false when no session is open (the event is dropped). */
  send(event) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(event));
    return true;
  }

  /** Bytes queued in the socket but not yet sent (to skip audio rather than build a backlog). */
  get buffered() {
    return this.socket ? this.socket.bufferedAmount : 0;
  }

  _scheduleRetry(reason, refusal = null) {
    const retryInMs = backoffMs(this.attempt, refusal === STARTING_UP ? { max: STARTING_UP_MAX_MS } : {});
    this.attempt += 1;
    this._setState("waiting", { retryInMs, reason, refusal });
    this.timer = setTimeout(() => this.connect(), retryInMs);
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.onState({ state, attempt: this.attempt, everConnected: this.everConnected, ...extra });
  }
}
