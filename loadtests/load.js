// Load test: ramps to VUS users over the stack's routes, holds, ramps down; the p95 latency
// and the error rate must stay under their thresholds.
import { sleep } from 'k6';
import { routes, thresholds, visit } from './lib.js';

const ROUTES = routes();
const VUS = Number(__ENV.VUS || 20);
const HOLD = __ENV.DURATION || '1m';

export const options = {
  stages: [
    { duration: __ENV.RAMP || '30s', target: VUS },
    { duration: HOLD, target: VUS },
    { duration: __ENV.RAMP || '30s', target: 0 },
  ],
  thresholds: thresholds(800),
};

export default function () {
  visit(ROUTES[(__ITER + __VU) % ROUTES.length]);
  sleep(Number(__ENV.PAUSE_S || 0.2));
}
