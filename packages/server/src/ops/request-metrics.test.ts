import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { DURATION_BUCKETS, HttpRequestMetrics } from './request-metrics.js';

/** The same requests, fed to prom-client's own Counter and Histogram: what a scrape must show. */
function reference(requests: Array<[string, string, number, number]>): Registry {
  const registry = new Registry();
  const counter = new Counter({
    name: 'bulwark_http_requests_total',
    help: 'HTTP requests answered, by route template, method and status code.',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const histogram = new Histogram({
    name: 'bulwark_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by route template and method.',
    labelNames: ['method', 'route'],
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  for (const [method, route, status, seconds] of requests) {
    counter.inc({ method, route, status: String(status) });
    histogram.observe({ method, route }, seconds);
  }
  return registry;
}

/** Exposition lines in a fixed order: Prometheus reads series in any order. */
const lines = async (registry: Registry) => (await registry.metrics()).split('\n').sort();

describe('HTTP request metrics', () => {
  it('expose exactly what prom-client would for the same requests', async () => {
    const requests: Array<[string, string, number, number]> = [
      ['GET', '/api/orgs/:org/members', 200, 0.0004],
      ['GET', '/api/orgs/:org/agents', 200, 0.001], // on a bound: counted in that bucket ("le")
      ['GET', '/api/orgs/:org/members', 200, 0.0031],
      ['POST', '/api/orgs/:org/members', 403, 0.02],
      ['GET', '/api/orgs/:org/members', 404, 7.5], // above every bound: only in +Inf
      ['GET', 'unmatched', 404, 0.00001],
      ['GET', '/api/orgs/:org/members', 200, 0.25],
      ['GET', '/api/orgs/"quoted"\\route', 500, 0.5], // label values are escaped the same way
    ];
    const registry = new Registry();
    const metrics = new HttpRequestMetrics([registry]);
    for (const [method, route, status, seconds] of requests) metrics.record(method, route, status, seconds);

    const exposed = await lines(registry);
    expect(exposed).toEqual(await lines(reference(requests)));
    // Not vacuous: the members GETs are there, counted and summed.
    expect(exposed).toContain(
      'bulwark_http_requests_total{method="GET",route="/api/orgs/:org/members",status="200"} 3',
    );
    expect(exposed).toContain(
      'bulwark_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/orgs/:org/members"} 2',
    );
    expect(exposed).toContain(
      'bulwark_http_request_duration_seconds_count{method="GET",route="unmatched"} 1',
    );

    // The JSON form (Registry.getMetricsAsJSON) carries the same series.
    const json = async (registry: Registry) =>
      (await registry.getMetricsAsJSON()).map(({ name, type, values }) => ({
        name,
        type,
        values: values
          .map((entry: { labels: object; value: number; metricName?: string }) =>
            JSON.stringify({ metricName: entry.metricName, labels: entry.labels, value: entry.value }),
          )
          .sort(),
      }));
    expect(await json(registry)).toEqual(await json(reference(requests)));
  });

  it('show nothing before the first request or after a reset, as prom-client does', async () => {
    const registry = new Registry();
    const metrics = new HttpRequestMetrics([registry]);
    const empty = await lines(reference([]));
    expect(await lines(registry)).toEqual(empty);
    metrics.record('GET', '/healthz', 200, 0.0002);
    expect(await lines(registry)).not.toEqual(empty);
    registry.resetMetrics();
    expect(await lines(registry)).toEqual(empty);
  });
});
