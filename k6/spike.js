// Spike: a quiet baseline, a sudden jump to SPIKE_VUS within SPIKE_RAMP,
// a short hold, and a sudden drop: does the server accept the storm and
// recover?
//
//   k6 run -e BASE_VUS=100 -e SPIKE_VUS=5000 -e SPIKE_RAMP=10s k6/spike.js
import { env, envInt, thresholds, TLS_INSECURE } from './lib/config.js';
import { session } from './lib/session.js';
import { scrapeServer } from './lib/server_metrics.js';

const base = envInt('BASE_VUS', 100);
const spike = envInt('SPIKE_VUS', 5000);
const jump = env('SPIKE_RAMP', '10s');

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: env('RAMP', '30s'), target: base },
        { duration: env('BEFORE', '1m'), target: base },
        { duration: jump, target: spike },
        { duration: env('HOLD', '1m'), target: spike },
        { duration: jump, target: base },
        { duration: env('AFTER', '1m'), target: base },
        { duration: env('RAMP_DOWN', '10s'), target: 0 },
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
