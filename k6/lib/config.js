// Settings shared by every script, each overridable by an environment
// variable (k6 run -e NAME=value, or the shell environment).

export function env(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : v;
}

export function envInt(name, fallback) {
  const v = parseInt(env(name, String(fallback)), 10);
  if (Number.isNaN(v)) {
    throw new Error(`${name} must be a number, got '${__ENV[name]}'`);
  }
  return v;
}

// "10s", "500ms", "2m" -> milliseconds.
export function durationMs(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(String(text).trim());
  if (!m) {
    throw new Error(`'${text}' is not a duration like 500ms, 10s, 2m`);
  }
  const n = parseFloat(m[1]);
  return { ms: n, s: n * 1000, m: n * 60000, h: n * 3600000 }[m[2]];
}

export const WS_URL = env('WS_URL', 'ws://127.0.0.1:8080/ws');
export const METRICS_URL = env('METRICS_URL', '');
export const SESSION = env('SESSION', '60s');
export const INTERVAL = env('INTERVAL', '10s');
// wss:// to a server whose certificate k6 cannot verify (a test server's
// self-signed one): TLS_INSECURE=1. For a private CA, prefer pointing
// SSL_CERT_FILE at it: the check then stays on.
export const TLS_INSECURE = env('TLS_INSECURE', '0') === '1';
// RECONNECT=1: connect again when the server ends a connection, after a
// backoff from RECONNECT_MIN doubling to RECONNECT_MAX, with full jitter,
// or after the server's `reconnect in N ms` hint (lib/backoff.js).
export const RECONNECT = env('RECONNECT', '0') === '1';
export const RECONNECT_MIN = durationMs(env('RECONNECT_MIN', '100ms'));
export const RECONNECT_MAX = durationMs(env('RECONNECT_MAX', '10s'));

// Thresholds every scenario shares: the run fails when one is crossed.
export function thresholds(overrides = {}) {
  return Object.assign(
    {
      ws_handshake_success: [`rate>=${env('HANDSHAKE_OK', '0.99')}`],
      ws_pong_success: [`rate>=${env('PONG_OK', '0.99')}`],
      ws_ping_rtt: [`p(95)<${env('PING_P95_MS', '100')}`],
      ws_unexpected_closes: [`count<=${env('MAX_UNEXPECTED_CLOSES', '0')}`],
      checks: ['rate>=0.99'],
    },
    overrides,
  );
}
