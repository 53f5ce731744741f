// A live room over WebSocket (docs/protocol.md): `auth` first, clock sync with ping/pong,
// numbered broadcasts tracked by `seq`/`epoch` with `resume` after a gap or a reconnect,
// reconnects with backoff (never on close codes 4500–4999).

import { token } from "./api.js";

/** This phone's clock in Unix seconds (sub-millisecond, monotonic within the page). */
export const nowS = () => (performance.timeOrigin + performance.now()) / 1000;

const NUMBERED = new Set(["event", "countdown", "phase", "cue", "drill_results"]);
const BACKOFF_S = [0.5, 1, 2, 4, 8, 15];
const SYNC_SAMPLES = 5;
const SYNC_EVERY_MS = 10000;

/** The clock filter: keep the last 8 exchanges, trust the one with the smallest round trip. */
export class ClockSync {
  constructor() { this.samples = []; }
  add(t0, t1, t2, t3) {
    const rtt = (t3 - t0) - (t2 - t1);
    const offset = ((t1 - t0) + (t2 - t3)) / 2;
    if (!(rtt >= 0)) return null;
    this.samples.push({ offset, rtt });
    if (this.samples.length > 8) this.samples.shift();
    return { offset, rtt };
  }
  get best() {
    return this.samples.reduce((a, b) => (a && a.rtt <= b.rtt ? a : b), null);
  }
  get offset() { return this.best?.offset ?? 0; }
}

export class Room {
  /**
   * @param {string} roomId race id or drill id
   * @param {{onFrame: Function, onState?: Function, onPong?: Function, auth?: Function}} handlers
   */
  constructor(roomId, { onFrame, onState = () => {}, onPong = () => {}, auth = null }) {
    this.roomId = roomId;
    // The `auth` frame's credential: the account's bearer token, or a spotter's share link.
    this.auth = auth || (() => ({ token: token.get() || "" }));
    this.onFrame = onFrame;
    this.onState = onState;
    this.onPong = onPong;
    this.clock = new ClockSync();
    this.ws = null;
    this.seq = null;      // last numbered broadcast applied
    this.epoch = null;
    this.resuming = false;
    this.stopped = false;
    this.attempt = 0;
    this.timer = null;
    this.syncTimer = null;
    this.cid = 0;
    this.state = "connecting";
    this.closeCode = null;
  }

  get url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/ws/rooms/${encodeURIComponent(this.roomId)}`;
  }

  /** Server time now, by the best clock sample. */
  serverNow() { return nowS() + this.clock.offset; }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  open() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", ...this.auth() }));
    ws.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch { return; }
      this.handle(frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.syncTimer);
      this.closeCode = e.code;
      if (this.stopped) return;
      if (e.code >= 4500 && e.code <= 4999) {
        this.stopped = true;
        this.setState("closed", e.code);
        return;
      }
      this.retry();
    };
  }

  retry() {
    const base = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
    this.attempt += 1;
    const delay = base * (0.75 + Math.random() * 0.5);
    this.setState("reconnecting", delay);
    this.timer = setTimeout(() => this.open(), delay * 1000);
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    this.cid += 1;
    const cid = `w${this.cid}`;
    this.ws.send(JSON.stringify({ ...frame, cid }));
    return cid;
  }

  get isOpen() { return !!this.ws && this.ws.readyState === WebSocket.OPEN && this.state === "open"; }

  handle(frame) {
    switch (frame.type) {
      case "welcome": return this.welcome(frame);
      case "pong": return this.pong(frame);
      case "standings":
        if (this.seq !== null && frame.as_of_seq > this.seq) this.resume();
        return this.onFrame(frame);
      default:
        if (NUMBERED.has(frame.type) && typeof frame.seq === "number") {
          if (frame.epoch !== undefined && this.epoch !== null && frame.epoch !== this.epoch) {
            this.resume();
            return undefined;
          }
          if (this.seq !== null && frame.seq <= this.seq) return undefined; // a repeat
          if (this.seq !== null && frame.seq > this.seq + 1) {
            this.resume(); // missed something: the replay brings it in order
            return undefined;
          }
          this.seq = frame.seq;
        }
        return this.onFrame(frame);
    }
  }

  welcome(frame) {
    this.attempt = 0;
    const replay = !this.resuming && this.seq !== null && this.epoch === frame.epoch
      && frame.seq > this.seq;
    if (replay) {
      this.resume();
    } else {
      this.resuming = false;
      this.seq = frame.seq;
      this.epoch = frame.epoch;
    }
    this.setState("open");
    this.onFrame(frame);
    this.startSync();
  }

  resume() {
    if (this.resuming || this.seq === null) return;
    this.resuming = true;
    this.send({ type: "resume", after_seq: this.seq, epoch: this.epoch });
    // The replay ends with the standings; a fresh welcome also ends it.
    setTimeout(() => { this.resuming = false; }, 3000);
  }

  startSync() {
    clearInterval(this.syncTimer);
    let burst = 0;
    const ping = () => this.send({ type: "ping", t0: nowS() });
    ping();
    const quick = setInterval(() => {
      burst += 1;
      if (burst >= SYNC_SAMPLES || !this.ws) { clearInterval(quick); return; }
      ping();
    }, 150);
    this.syncTimer = setInterval(ping, SYNC_EVERY_MS);
  }

  pong(frame) {
    const t3 = nowS();
    const sample = this.clock.add(frame.t0, frame.t1, frame.t2, t3);
    if (sample) this.onPong({ t0: frame.t0, t1: frame.t1, t2: frame.t2, t3 }, sample);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.syncTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}

/**
 * A runner's fixes for the room: numbered, kept until acked, resent after a reconnect.
 * `send(frame)` returns false when the socket is not open.
 */
export class GpsOutbox {
  constructor(room) {
    this.room = room;
    this.next = 1;
    this.pending = new Map(); // seq -> frame
    this.watchId = null;
    this.error = null;
    this.sent = 0;
    this.acked = 0;
    this.onChange = () => {};
  }

  start() {
    if (this.watchId !== null || !("geolocation" in navigator)) {
      if (!("geolocation" in navigator)) this.error = "this browser has no GPS access";
      return;
    }
    this.watchId = navigator.geolocation.watchPosition(
      (p) => { this.error = null; this.push(p); },
      (e) => { this.error = e.message || "GPS unavailable"; this.onChange(); },
      { enableHighAccuracy: true, maximumAge: 0, timeout: 30000 },
    );
  }

  stop() {
    if (this.watchId !== null) navigator.geolocation.clearWatch(this.watchId);
    this.watchId = null;
  }

  push(position) {
    const c = position.coords;
    const frame = { type: "gps", seq: this.next, t: position.timestamp / 1000,
      lat: c.latitude, lon: c.longitude };
    if (c.accuracy > 0 && c.accuracy <= 10000) frame.acc = c.accuracy;
    if (Number.isFinite(c.speed) && c.speed >= 0 && c.speed <= 200) frame.speed = c.speed;
    if (Number.isFinite(c.heading) && c.heading >= 0 && c.heading <= 360) frame.course = c.heading;
    this.next += 1;
    this.pending.set(frame.seq, frame);
    if (this.room.isOpen) { this.room.ws.send(JSON.stringify(frame)); this.sent += 1; }
    this.onChange();
  }

  /** After a (re)connect: forget what is stored, resend the rest paced under the rate limit. */
  welcome(ackedSeq) {
    for (const seq of [...this.pending.keys()]) if (seq <= ackedSeq) this.pending.delete(seq);
    this.next = Math.max(this.next, ackedSeq + 1);
    this.acked = Math.max(this.acked, ackedSeq);
    const backlog = [...this.pending.values()];
    let i = 0;
    const step = () => {
      if (i >= backlog.length || !this.room.isOpen) return;
      const f = backlog[i++];
      if (this.pending.has(f.seq)) this.room.ws.send(JSON.stringify(f));
      setTimeout(step, 70);
    };
    step();
    this.onChange();
  }

  ack(seq) {
    this.pending.delete(seq);
    this.acked = Math.max(this.acked, seq);
    this.onChange();
  }
}
