import { afterEach, describe, expect, it } from 'vitest';
import { patched } from './scim-input.js';
import { ScimError } from './scim-resources.js';

/**
 * A SCIM PATCH is applied by scim-patch, which walks the operation's path and its value's keys into
 * whatever object they name. Attack: an identity provider (or whoever holds its SCIM token) sends a
 * path or value that names the prototype, so that the change lands on every object of the server —
 * `beforeSecondFactor` on every route declaration would let half-signed-in sessions through
 * everywhere. Each such patch must be refused, and no object may gain the property.
 */

const PATCH = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
const user = () => ({
  schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
  id: 'usr_1',
  userName: 'a@x.test',
  active: true,
});
const polluted = () => (Object.prototype as Record<string, unknown>).beforeSecondFactor;

describe('SCIM PATCH and the prototype', () => {
  afterEach(() => {
    delete (Object.prototype as Record<string, unknown>).beforeSecondFactor;
  });

  // As they arrive: JSON text, where "__proto__" is a key like any other once parsed.
  const hostile = [
    '[{"op":"add","path":"__proto__.beforeSecondFactor","value":true}]',
    '[{"op":"replace","path":"constructor.prototype.beforeSecondFactor","value":true}]',
    '[{"op":"add","value":{"__proto__.beforeSecondFactor":true}}]',
    '[{"op":"add","value":{"constructor":{"prototype":{"beforeSecondFactor":true}}}}]',
    '[{"op":"replace","path":"name","value":{"__proto__":{"beforeSecondFactor":true}}}]',
    '[{"op":"add","path":"emails[type eq \\"work\\"].__proto__","value":{"beforeSecondFactor":true}}]',
  ];
  for (const operations of hostile)
    it(`refuses ${operations}`, () => {
      const body = JSON.parse(`{"schemas":["${PATCH}"],"Operations":${operations}}`);
      expect(() => patched(user(), body)).toThrow(ScimError);
      expect(polluted()).toBeUndefined();
    });

  it('still applies what Okta and Entra ID send', () => {
    const next = patched(user(), {
      schemas: [PATCH],
      Operations: [
        { op: 'Replace', path: 'active', value: 'False' },
        { op: 'replace', value: { displayName: 'Ada' } },
      ],
    });
    expect(next).toMatchObject({ active: 'False', displayName: 'Ada' });
  });
});
