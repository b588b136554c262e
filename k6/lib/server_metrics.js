// At the end of a run: scrape the server's /metrics (METRICS_URL) and
// report its connections, RSS and open FDs as k6 metrics, so the summary
// shows whether connections went back to zero. Waits up to 15 s for the
// server to finish closing.
import http from 'k6/http';
import { sleep } from 'k6';
import { Gauge } from 'k6/metrics';
import { METRICS_URL } from './config.js';

export const serverConnections = new Gauge('server_connections_after');
export const serverRss = new Gauge('server_rss_bytes_after');
export const serverFds = new Gauge('server_open_fds_after');

function sum(text, name) {
  let total = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const key = line.split(/[{ ]/)[0];
    if (key === name) {
      total += parseFloat(line.substring(line.lastIndexOf(' ') + 1));
      seen = true;
    }
  }
  return seen ? total : NaN;
}

export function scrapeServer() {
  if (!METRICS_URL) {
    return;
  }
  let conns = NaN;
  let body = '';
  for (let i = 0; i < 15; i++) {
    const res = http.get(METRICS_URL, { tags: { name: 'server_metrics' } });
    if (res.status === 200) {
      body = res.body;
      conns = sum(body, 'wsloop_connections');
      if (conns === 0) break;
    }
    sleep(1);
  }
  serverConnections.add(conns);
  serverRss.add(sum(body, 'process_resident_memory_bytes'));
  serverFds.add(sum(body, 'process_open_fds'));
}
