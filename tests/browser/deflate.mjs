// Headless Chromium (Debian's, driven by playwright-core) against a running
// wsloop with compression on: loads a small page, opens WebSockets from it
// (Chromium offers permessage-deflate with client_max_window_bits), checks
// the extension was negotiated, echoes text and binary above and below the
// threshold, and receives a room publish made from another connection.
//
// usage: node tests/browser/deflate.mjs ws://127.0.0.1:PORT/ws
// Prints one JSON line with what the page saw; exits 0 only if every check
// passed. Run by tests/browser.rs, which starts the server.

import http from 'node:http';
import { chromium } from 'playwright-core';

const wsUrl = process.argv[2];
if (!wsUrl) {
  console.error('usage: deflate.mjs ws://HOST:PORT/ws');
  process.exit(2);
}

// The page: the checks live in it, as a site's own script would.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>wsloop deflate</title></head>
<body><p id="status">loading</p><script>
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error('WebSocket error on ' + url));
  });
}
function next(ws) {
  return new Promise((resolve, reject) => {
    ws.onmessage = (e) => resolve(e.data);
    ws.onclose = (e) => reject(new Error('closed ' + e.code + ' ' + e.reason));
  });
}
function text(len) {
  const words = ['the', 'meeting', 'moved', 'to', 'three', 'bring', 'notes', 'and', 'laptop', 'thanks'];
  let s = '', i = 7;
  while (s.length < len) { i = (i * 31 + 11) % 1000003; s += words[i % words.length] + ' '; }
  return s.slice(0, len);
}
function bytes(len) {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7) % 251;
  return b;
}
function same(a, b) {
  if (typeof a === 'string') return a === b;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
async function runChecks(url) {
  const result = { extensions: '', echoes: {}, publish: false };
  const a = await open(url);
  result.extensions = a.extensions;
  const cases = { small_text: text(20), large_text: text(3000), small_binary: bytes(16), large_binary: bytes(4096) };
  for (const [name, msg] of Object.entries(cases)) {
    const reply = next(a);
    a.send(msg);
    result.echoes[name] = same(await reply, typeof msg === 'string' ? msg : msg.buffer);
  }
  const b = await open(url);
  let ack = next(a); a.send(JSON.stringify({ type: 'join', room: 'browser' }));
  if (JSON.parse(await ack).type !== 'joined') throw new Error('a did not join');
  ack = next(b); b.send(JSON.stringify({ type: 'join', room: 'browser' }));
  if (JSON.parse(await ack).type !== 'joined') throw new Error('b did not join');
  const data = text(2000);
  const delivered = next(a);
  b.send(JSON.stringify({ type: 'publish', room: 'browser', echo: false, data }));
  const m = JSON.parse(await delivered);
  result.publish = m.type === 'message' && m.room === 'browser' && m.data === data;
  result.extensions_b = b.extensions;
  a.close(1000); b.close(1000);
  document.getElementById('status').textContent = 'done';
  return result;
}
</script></body></html>`;

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(PAGE);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// playwright starts Chromium with a fresh, empty profile directory of its
// own (it refuses --user-data-dir here) and removes it on close.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
  ],
  timeout: 60000,
});
let code = 1;
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  const result = await page.evaluate((url) => runChecks(url), wsUrl);
  console.log(JSON.stringify(result));
  const ok = result.extensions.startsWith('permessage-deflate') && result.publish &&
    Object.values(result.echoes).every(Boolean);
  code = ok ? 0 : 1;
} catch (e) {
  console.error(`browser check failed: ${e.message}`);
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
