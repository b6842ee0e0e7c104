// Smoke test: one user walks every route of the stack a few times; any error or a slow answer
// fails the run (k6 exits 99 when a threshold is crossed).
import { sleep } from 'k6';
import { routes, thresholds, visit } from './lib.js';

const ROUTES = routes();

export const options = {
  vus: 1,
  iterations: Number(__ENV.ITERATIONS || 5),
  thresholds: thresholds(500),
};

export default function () {
  for (const route of ROUTES) {
    visit(route);
  }
  sleep(0.1);
}
