// The classic WebSocket load test: ramp 0 -> VUS users over RAMP, hold for
// HOLD, ramp down over RAMP_DOWN. Each user connects, pings every INTERVAL,
// checks every pong, stays SESSION, closes, and starts again.
//
//   k6 run k6/load.js                                   (1m to 5000, 3m hold, 1m down)
//   k6 run -e VUS=50 -e RAMP=5s -e HOLD=10s -e SESSION=5s -e INTERVAL=1s k6/load.js
import { env, envInt, thresholds, TLS_INSECURE } from './lib/config.js';
import { session } from './lib/session.js';
import { scrapeServer } from './lib/server_metrics.js';

const RAMP = env('RAMP', '1m');

export const options = {
  scenarios: {
    load: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: envInt('VUS', 5000) },
        { duration: env('HOLD', '3m'), target: envInt('VUS', 5000) },
        { duration: env('RAMP_DOWN', RAMP), target: 0 },
      ],
      gracefulRampDown: env('GRACEFUL', '30s'),
    },
  },
  insecureSkipTLSVerify: TLS_INSECURE,
  thresholds: thresholds(),
};

export default function () {
  session();
}

export function teardown() {
  scrapeServer();
}
