// Reconnecting after the server ended a connection (RECONNECT=1), as
// `wsloop load --reconnect` does: exponential backoff with full jitter
// (retry N waits a uniform time up to RECONNECT_MIN * 2^N, capped at
// RECONNECT_MAX), or, for the first retry, the server's hint
// (`reconnect in N ms` in its close reason) plus up to RECONNECT_MIN of
// jitter. No wait is longer than RECONNECT_MAX, whatever the server says.

// The most digits a hint's number may have: more is malformed.
const HINT_DIGITS = 12;

// The wait before retry `attempt` (0: the first after the loss), in ms,
// with the server's `hintMs` (or null) and `random` uniform in [0, 1).
export function backoffMs(attempt, hintMs, minMs, maxMs, random) {
  const max = Math.max(maxMs, minMs);
  if (hintMs !== null && attempt === 0) {
    return Math.min(Math.min(hintMs, max) + random * minMs, max);
  }
  const cap = Math.min(max, minMs * Math.pow(2, Math.min(attempt, 31)));
  return random * cap;
}

// The hint in a close reason (or k6's error text that carries it, e.g.
// "websocket: close 1012: service restart; reconnect in 1234 ms"), in
// ms; null if there is none or it is not a plain decimal.
export function parseHint(text) {
  const m = new RegExp(`reconnect in (\\d{1,${HINT_DIGITS}}) ms`).exec(String(text));
  return m ? parseInt(m[1], 10) : null;
}
