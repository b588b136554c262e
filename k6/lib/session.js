// One user session over k6/ws: connect, check the 101, send
// {"type":"ping","payload":...} every INTERVAL and check each pong carries
// the same payload, stay for SESSION, close. Shared by every scenario.
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { durationMs, INTERVAL, SESSION, WS_URL } from './config.js';

export const handshakeSuccess = new Rate('ws_handshake_success');
export const pongSuccess = new Rate('ws_pong_success');
export const pingRtt = new Trend('ws_ping_rtt', true);
export const unexpectedCloses = new Counter('ws_unexpected_closes');
export const wrongMessages = new Counter('ws_wrong_messages');

// Close codes a user session may end with: ours (1000), the server going
// away (1001), or a close without a code (1005).
const EXPECTED_CLOSE = [1000, 1001, 1005];

export function session() {
  const sessionMs = durationMs(SESSION);
  const intervalMs = durationMs(INTERVAL);
  const pending = new Map(); // payload -> send time (ms)
  let seq = 0;
  let closingOnPurpose = false;

  const res = ws.connect(WS_URL, null, function (socket) {
    socket.on('open', function () {
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
      }, sessionMs);
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
      if (!closingOnPurpose && EXPECTED_CLOSE.indexOf(code) < 0) {
        unexpectedCloses.add(1, { code: String(code) });
      }
    });

    socket.on('error', function (e) {
      if (!closingOnPurpose && e.error() !== 'websocket: close sent') {
        unexpectedCloses.add(1, { code: 'error' });
      }
    });
  });

  const upgraded = check(res, { 'handshake status is 101': (r) => r && r.status === 101 });
  handshakeSuccess.add(upgraded);
}
