// Soak: a long hold at moderate load, to find leaks: connections, memory
// and descriptors must stay flat, and return to zero afterwards (with
// METRICS_URL set, the summary shows the server's figures after the run).
//
//   k6 run -e VUS=1000 -e HOLD=2h -e METRICS_URL=http://127.0.0.1:2112/metrics k6/soak.js
import { env, envInt, thresholds, TLS_INSECURE } from './lib/config.js';
import { session } from './lib/session.js';
import { scrapeServer } from './lib/server_metrics.js';

const vus = envInt('VUS', 1000);

export const options = {
  scenarios: {
    soak: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: env('RAMP', '2m'), target: vus },
        { duration: env('HOLD', '1h'), target: vus },
        { duration: env('RAMP_DOWN', '2m'), target: 0 },
      ],
      gracefulRampDown: env('GRACEFUL', '30s'),
    },
  },
  insecureSkipTLSVerify: TLS_INSECURE,
  thresholds: thresholds(
    env('METRICS_URL', '') ? { server_connections_after: ['value==0'] } : {},
  ),
};

export default function () {
  session();
}

export function teardown() {
  scrapeServer();
}
