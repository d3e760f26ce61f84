import { describe, expect, it } from 'vitest';
import { ActionDeclaration } from './agent-protocol.js';

/**
 * The audience an agent reports for an action's workload identity (SEC-4) is validated where every
 * report is: an agent cannot smuggle whitespace, control characters, an unbounded string or extra
 * fields through it (the server then checks the audience against its allow-list).
 */
const action = (workloadIdentity: unknown) =>
  ActionDeclaration.safeParse({
    name: 'assume',
    description: 'assumes a role',
    params: { type: 'object' },
    risk: 'low',
    workloadIdentity,
  });

describe('an action declaring workloadIdentity', () => {
  it('takes one audience of printable ASCII', () => {
    expect(action({ audience: 'sts.amazonaws.com' }).data?.workloadIdentity).toEqual({
      audience: 'sts.amazonaws.com',
    });
    expect(action(undefined).data?.workloadIdentity).toBeUndefined();
  });

  it('refuses empty, spaced, control-character, oversized audiences and unknown fields', () => {
    for (const bad of [
      {},
      { audience: '' },
      { audience: 'sts amazonaws com' },
      { audience: 'sts.amazonaws.com\n' },
      { audience: 'a'.repeat(257) },
      { audience: 'sts.amazonaws.com', subject: 'org:other' },
    ])
      expect(action(bad).success, JSON.stringify(bad)).toBe(false);
  });
});
