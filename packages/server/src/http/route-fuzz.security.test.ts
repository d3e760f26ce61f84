import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OWNER } from '../test-support/org-world.js';
import {
  type FuzzReport,
  type FuzzWorld,
  formatReport,
  runRouteFuzz,
  startFuzzWorld,
  writeFailures,
} from '../test-support/route-fuzz.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * The attack (QA-2): anyone who can reach the server — signed in, with an API key, or with nothing —
 * sends it what no client would: fields of the wrong type, strings of 70,000 characters, JSON nested
 * 100,000 deep, lone surrogates and NULs and bidi overrides, things shaped like tokens and private
 * keys, ids from another organization, broken JSON, bodies that claim to be XML. An input a route did
 * not expect that throws where nothing catches it answers 500 (a crash for the caller, a stack trace
 * in the logs, sometimes a half-done change); one that takes the process down, or leaves it unable to
 * answer, is a denial of service for every tenant. Every route must answer such input with a precise
 * 4xx, keep answering, and stay healthy.
 *
 * The requests come from each registered route's own schemas (test-support/route-fuzz.ts), so a route
 * added later is fuzzed without anyone remembering to. The seed is fixed: a failure is printed with
 * the exact request, and the same run makes the same requests again. `npm run fuzz` runs ten times as
 * many (BULWARK_FUZZ_REQUESTS); BULWARK_FUZZ_SEED picks another seed.
 */

const SEED = Number(process.env.BULWARK_FUZZ_SEED ?? 20_261_122);
const REQUESTS = Number(process.env.BULWARK_FUZZ_REQUESTS ?? 20_000);

let fuzz: FuzzWorld;
let report: FuzzReport;

beforeAll(async () => {
  fuzz = await startFuzzWorld();
}, 120_000);

afterAll(async () => {
  await fuzz?.close();
});

describe('schema-aware fuzzing of every route (QA-2)', () => {
  it(
    `answers ${REQUESTS} hostile requests without a 5xx or a dropped connection`,
    async () => {
      process.stdout.write(
        `route fuzz: seed ${SEED}, ${REQUESTS} requests over ${fuzz.routes.length} routes\n`,
      );
      report = await runRouteFuzz(fuzz, {
        seed: SEED,
        count: REQUESTS,
        progress: (line) => process.stdout.write(`${line}\n`),
      });
      process.stdout.write(`${formatReport(report)}\n`);
      if (report.failures.length > 0)
        process.stdout.write(`every failure in full: ${writeFailures(report)}\n`);

      expect(report.requests).toBe(REQUESTS);
      expect(
        report.failures.map(
          (f) => `${f.reason}: ${f.sent.method} ${f.sent.url.slice(0, 200)} as ${f.request.identity}`,
        ),
      ).toEqual([]);
      // Not a vacuous run: all three callers were answered, the first two got past validation and
      // authorization, and the low export limit was reached (a 429, not a 5xx).
      expect(report.byIdentity.owner['200']).toBeGreaterThan(0);
      expect(report.byIdentity.apiKey['200']).toBeGreaterThan(0);
      expect(report.byIdentity.anonymous['401']).toBeGreaterThan(0);
      expect(report.byStatus['422']).toBeGreaterThan(0);
      expect(report.byStatus['429']).toBeGreaterThan(0);
      expect(report.routesWithSuccess).toBeGreaterThan(report.routes / 2);
    },
    Math.max(300_000, REQUESTS * 15),
  );

  it('is healthy afterwards: probes answer and a person can sign in and work', async () => {
    expect(report, 'the fuzz run above must run first').toBeDefined();
    const base = fuzz.world.server.url;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);

    const person = new SessionClient(base);
    const login = await person.json<{ secondFactorRequired: boolean }>('POST', '/api/auth/login', {
      email: OWNER.email,
      password: fuzz.ownerPassword(),
    });
    expect(login.status).toBe(200);
    // The run may have made the owner enrol an authenticator; the upkeep's session is signed in fully.
    const client = login.body.secondFactorRequired ? fuzz.world.owner.client : person;
    expect((await client.json('GET', '/api/auth/session')).status).toBe(200);
    expect((await client.json('GET', '/api/orgs/acme/teams')).status).toBe(200);
    const team = await client.json('POST', '/api/orgs/acme/teams', { name: 'after the fuzz' });
    expect(team.status).toBe(201);
  });
});
