// Shared by the k6 scripts: the gateway routes of a stack, read from routes.json (written from
// the service declarations by `python -m infra.loadtests --write`), and the request they make.
//   BASE_URL  the gateway (default http://gateway:8080, its address on the stack network)
//   STACK     dev | qa | prod (default dev)
//   ROUTES    optional comma-separated route names to keep (e.g. python-api)
import http from 'k6/http';
import { check } from 'k6';

const document = JSON.parse(open('./routes.json'));

export const BASE_URL = (__ENV.BASE_URL || 'http://gateway:8080').replace(/\/$/, '');

export function routes() {
  const stack = __ENV.STACK || 'dev';
  const all = document.stacks[stack];
  if (!all) {
    throw new Error(`unknown STACK ${stack}: one of ${Object.keys(document.stacks).join(', ')}`);
  }
  const wanted = (__ENV.ROUTES || '').split(',').filter((name) => name !== '');
  const kept = wanted.length ? all.filter((route) => wanted.includes(route.name)) : all;
  if (!kept.length) {
    throw new Error(`ROUTES ${__ENV.ROUTES} names no route of ${stack}`);
  }
  return kept;
}

// A redirect (Grafana's login) is followed; anything but 2xx/3xx at the end counts as failed.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }));

export function visit(route) {
  const response = http.get(`${BASE_URL}${route.path}`, { tags: { route: route.name } });
  check(response, { [`${route.name} answers`]: (r) => r.status >= 200 && r.status < 400 });
  return response;
}

// The thresholds both scripts hold: p95 latency and error rate, overridable per run.
export function thresholds(p95Ms) {
  return {
    http_req_duration: [`p(95)<${__ENV.P95_MS || p95Ms}`],
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE || 0.01}`],
    checks: ['rate>0.99'],
  };
}
