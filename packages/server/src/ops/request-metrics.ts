import { Counter, Histogram, type Registry } from 'prom-client';

/**
 * The two instruments every HTTP request feeds: `bulwark_http_requests_total` (by method, route
 * template and status) and `bulwark_http_request_duration_seconds` (by method and route template).
 *
 * prom-client validates and hashes the label set on every `inc()` and `observe()`: twice per request,
 * a measurable share of a cheap one (bench/api-read). Here a request adds to plain numbers found by
 * route and method, and the label sets are built only when Prometheus scrapes. Both stay prom-client
 * metrics of the same registry, rendered by prom-client: a scrape shows the very lines prom-client's
 * own Counter and Histogram would (request-metrics.test.ts compares the two).
 *
 * The series are bounded: route templates are the registered ones (or `unmatched`), methods are the
 * few that Node's HTTP parser accepts, and statuses are three-digit codes.
 */
const REQUESTS = {
  name: 'bulwark_http_requests_total',
  help: 'HTTP requests answered, by route template, method and status code.',
};
const DURATION = {
  name: 'bulwark_http_request_duration_seconds',
  help: 'Time to answer an HTTP request, by route template and method.',
};
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** What one method on one route has answered so far. */
interface RouteSeries {
  readonly method: string;
  readonly route: string;
  /** Requests by status code, in the order the codes were first seen. */
  readonly statuses: Map<number, number>;
  /** Observations per bucket (not cumulative); the last counts those above every bound. */
  readonly buckets: number[];
  sum: number;
  count: number;
}

export class HttpRequestMetrics {
  /** route template → method → series: two lookups and no allocation per request. */
  readonly #routes = new Map<string, Map<string, RouteSeries>>();

  constructor(registers: Registry[]) {
    const source: SeriesSource = {
      list: () => [...this.#routes.values()].flatMap((methods) => [...methods.values()]),
      clear: () => this.#routes.clear(),
    };
    // Both register themselves in `registers`, which is where scrapes find them.
    new RequestCounter(source, registers);
    new DurationHistogram(source, registers);
  }

  /** One answered request. */
  record(method: string, route: string, status: number, seconds: number): void {
    let methods = this.#routes.get(route);
    if (!methods) {
      methods = new Map();
      this.#routes.set(route, methods);
    }
    let series = methods.get(method);
    if (!series) {
      series = {
        method,
        route,
        statuses: new Map(),
        buckets: new Array<number>(DURATION_BUCKETS.length + 1).fill(0),
        sum: 0,
        count: 0,
      };
      methods.set(method, series);
    }
    series.statuses.set(status, (series.statuses.get(status) ?? 0) + 1);
    // Prometheus buckets are "less than or equal": the first bound the value does not exceed.
    let bucket = 0;
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
    series.buckets[bucket]! += 1;
    series.sum += seconds;
    series.count += 1;
  }
}

/**
 * What the two metrics read their values from. Both are views of the same requests, so resetting
 * either (Registry.resetMetrics) clears both.
 */
interface SeriesSource {
  list(): RouteSeries[];
  clear(): void;
}

/** The counter's values come from the series when scraped; prom-client keeps its name, help and type. */
class RequestCounter extends Counter<'method' | 'route' | 'status'> {
  readonly #source: SeriesSource;

  constructor(source: SeriesSource, registers: Registry[]) {
    super({ ...REQUESTS, labelNames: ['method', 'route', 'status'], registers });
    this.#source = source;
  }

  override reset() {
    super.reset();
    // prom-client's constructor resets too, before this class has set its fields.
    if (#source in this) this.#source.clear();
  }

  override async get() {
    const values = this.#source.list().flatMap(({ method, route, statuses }) =>
      [...statuses].map(([status, value]) => ({
        labels: { method, route, status: String(status) },
        value,
      })),
    );
    return { ...(await super.get()), values };
  }
}

/**
 * The histogram's values, built the way prom-client builds its own: cumulative buckets, +Inf, sum
 * and count, the series' labels beside each bucket's `le`. prom-client renders a histogram from
 * `getForPromString()` and derives `get()` from it, so that is the one method replaced.
 */
class DurationHistogram extends Histogram<'method' | 'route'> {
  readonly #source: SeriesSource;

  constructor(source: SeriesSource, registers: Registry[]) {
    super({ ...DURATION, labelNames: ['method', 'route'], buckets: DURATION_BUCKETS, registers });
    this.#source = source;
  }

  override reset() {
    super.reset();
    // prom-client's constructor resets too, before this class has set its fields.
    if (#source in this) this.#source.clear();
  }

  async getForPromString() {
    const value = (metricName: string, labels: object, sharedLabels: object, count: number) => ({
      metricName: `${DURATION.name}${metricName}`,
      labels,
      sharedLabels,
      value: count,
    });
    const values = this.#source.list().flatMap(({ method, route, buckets, sum, count }) => {
      const shared = { method, route };
      let cumulative = 0;
      return [
        ...DURATION_BUCKETS.map((le, i) => {
          cumulative += buckets[i]!;
          return value('_bucket', { le }, shared, cumulative);
        }),
        value('_bucket', { le: '+Inf' }, shared, count),
        value('_sum', {}, shared, sum),
        value('_count', {}, shared, count),
      ];
    });
    return { ...DURATION, type: 'histogram', aggregator: 'sum', values };
  }
}
