// Stress: climb in STEPS steps of STEP_VUS users, each held for STEP, past
// the capacity you expect, to find where handshakes or pongs start to fail.
// The thresholds fail the run at the first step that breaks them, so the
// summary shows the breaking point.
//
//   k6 run -e STEP_VUS=2000 -e STEPS=6 -e STEP=1m k6/stress.js
import { env, envInt, thresholds, TLS_INSECURE } from './lib/config.js';
import { session } from './lib/session.js';
import { scrapeServer } from './lib/server_metrics.js';

const stepVus = envInt('STEP_VUS', 2000);
const steps = envInt('STEPS', 6);
const step = env('STEP', '1m');
const climb = env('CLIMB', '30s');

const stages = [];
for (let i = 1; i <= steps; i++) {
  stages.push({ duration: climb, target: stepVus * i });
  stages.push({ duration: step, target: stepVus * i });
}
stages.push({ duration: env('RAMP_DOWN', '30s'), target: 0 });

export const options = {
  scenarios: {
    stress: { executor: 'ramping-vus', startVUs: 0, stages: stages, gracefulRampDown: env('GRACEFUL', '30s') },
  },
  // Stop at the breaking point instead of hammering a server that is down.
  insecureSkipTLSVerify: TLS_INSECURE,
  thresholds: thresholds({
    ws_handshake_success: [{ threshold: `rate>=${env('HANDSHAKE_OK', '0.99')}`, abortOnFail: true, delayAbortEval: '10s' }],
  }),
};

export default function () {
  session();
}

export function teardown() {
  scrapeServer();
}
