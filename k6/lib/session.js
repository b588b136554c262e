// One user session over k6/ws: connect, check the 101, send
// {"type":"ping","payload":...} every INTERVAL and check each pong carries
// the same payload, stay for SESSION, close. Shared by every scenario.
//
// With RECONNECT=1, a connection the server ends (any close code, or the
// connection lost) is connected again after a backoff with jitter, or
// after the server's `reconnect in N ms` hint (lib/backoff.js), until the
// session's time is up: ws_reconnects counts them, ws_reconnect_gap times
// each from the loss to open again, ws_reconnect_failures counts retries
// that did not get their 101, ws_never_back the losses still waiting when
// the session ended.
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { backoffMs, parseHint } from './backoff.js';
import { durationMs, INTERVAL, RECONNECT, RECONNECT_MAX, RECONNECT_MIN, SESSION, WS_URL } from './config.js';

export const handshakeSuccess = new Rate('ws_handshake_success');
export const pongSuccess = new Rate('ws_pong_success');
export const pingRtt = new Trend('ws_ping_rtt', true);
export const unexpectedCloses = new Counter('ws_unexpected_closes');
export const wrongMessages = new Counter('ws_wrong_messages');
export const reconnects = new Counter('ws_reconnects');
export const reconnectGap = new Trend('ws_reconnect_gap', true);
export const reconnectFailures = new Counter('ws_reconnect_failures');
export const neverBack = new Counter('ws_never_back');

// Close codes a user session may end with: ours (1000), the server going
// away (1001), a close without a code (1005), or a service restart (1012,
// the code of a paced drain).
const EXPECTED_CLOSE = [1000, 1001, 1005, 1012];

export function session() {
  // The session's end, set when its first connection opens.
  const s = { end: null, lost: null };
  for (;;) {
    const c = connection(s);
    if (s.lost === null) {
      handshakeSuccess.add(check(c.res, { 'handshake status is 101': (r) => r && r.status === 101 }));
    } else if (!c.upgraded) {
      reconnectFailures.add(1);
    }
    s.lost = nextLoss(c, s.lost);
    if (!RECONNECT || s.lost === null) {
      return;
    }
    const wait = backoffMs(s.lost.attempt, s.lost.hint, RECONNECT_MIN, RECONNECT_MAX, Math.random());
    if (s.end === null || Date.now() + wait >= s.end) {
      neverBack.add(1);
      return;
    }
    sleep(wait / 1000);
  }
}

// After connection `c`: the loss to bring back (when, how many retries
// failed, the server's hint), or null when there is none (the session
// closed it, or its first connect failed).
function nextLoss(c, lost) {
  if (c.upgraded) {
    return c.serverEnded ? { since: c.endedAt, attempt: 0, hint: c.hint } : null;
  }
  return lost === null ? null : { since: lost.since, attempt: lost.attempt + 1, hint: null };
}

// One connection of session `s`, until the session's end or until the
// server ends it: what happened to it.
function connection(s) {
  const intervalMs = durationMs(INTERVAL);
  const pending = new Map(); // payload -> send time (ms)
  const c = { res: null, upgraded: false, serverEnded: false, endedAt: 0, hint: null };
  let seq = 0;
  let closingOnPurpose = false;

  c.res = ws.connect(WS_URL, null, function (socket) {
    socket.on('open', function () {
      c.upgraded = true;
      if (s.lost !== null) {
        reconnects.add(1);
        reconnectGap.add(Date.now() - s.lost.since);
      }
      if (s.end === null) {
        s.end = Date.now() + durationMs(SESSION);
      }
      const ping = function () {
        // A pong still missing after a whole interval counts as a failure.
        const now = Date.now();
        for (const [payload, sent] of pending) {
          if (now - sent >= intervalMs) {
            pongSuccess.add(false);
            pending.delete(payload);
          }
        }
        const payload = `${__VU}-${__ITER}-${seq++}`;
        pending.set(payload, now);
        socket.send(JSON.stringify({ type: 'ping', payload: payload }));
      };
      ping();
      socket.setInterval(ping, intervalMs);
      socket.setTimeout(function () {
        closingOnPurpose = true;
        socket.close(1000);
      }, Math.max(0, s.end - Date.now()));
    });

    socket.on('message', function (data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        wrongMessages.add(1);
        pongSuccess.add(false);
        return;
      }
      const sent = msg && msg.type === 'pong' ? pending.get(msg.payload) : undefined;
      if (sent === undefined) {
        wrongMessages.add(1);
        pongSuccess.add(false);
        return;
      }
      pending.delete(msg.payload);
      pingRtt.add(Date.now() - sent);
      pongSuccess.add(true);
    });

    socket.on('close', function (code) {
      // Pings whose pong was overdue (older than an interval) failed; one
      // sent just before the session ended had no chance and is not counted.
      const now = Date.now();
      for (const sent of pending.values()) {
        if (now - sent >= intervalMs) {
          pongSuccess.add(false);
        }
      }
      pending.clear();
      if (!closingOnPurpose) {
        c.serverEnded = true;
        c.endedAt = now;
        if (EXPECTED_CLOSE.indexOf(code) < 0) {
          unexpectedCloses.add(1, { code: String(code) });
        }
      }
    });

    socket.on('error', function (e) {
      // k6 reports the server's close frame as an error too, with its
      // reason ("websocket: close 1012: ...; reconnect in N ms"): the hint
      // is read here, and the code judged by the close handler.
      const text = e.error();
      const hint = parseHint(text);
      if (hint !== null) {
        c.hint = hint;
      }
      if (!closingOnPurpose && !/^websocket: close (sent|\d+)/.test(text)) {
        unexpectedCloses.add(1, { code: 'error' });
      }
    });
  });
  return c;
}
