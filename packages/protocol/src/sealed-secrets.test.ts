import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rawPublicKey } from './agent-protocol.js';
import { openSecrets, SealedSecrets, SealedSecretsError, sealSecrets } from './sealed-secrets.js';

describe('secrets sealed to an agent', () => {
  const agent = generateKeyPairSync('x25519');
  const recipient = rawPublicKey(agent.publicKey);
  const binding = { commandId: 'cmd_01M81RY6C83Z2TQS77D61GDTTJ', agentId: 'agt_01M81RY40N1Y2JCEAVSPF3ZPQR' };
  const secrets = { DB_PASSWORD: 'correct horse battery staple', API_TOKEN: 'tok-7Hq2' };

  it('opens with the agent’s key for the command it was sealed for, and shows nothing in clear', () => {
    const sealed = SealedSecrets.parse(sealSecrets(recipient, secrets, binding));
    expect(openSecrets(agent.privateKey, sealed, binding)).toEqual(secrets);
    const text = JSON.stringify(sealed);
    for (const value of Object.values(secrets)) {
      expect(text).not.toContain(value);
      expect(text).not.toContain(Buffer.from(value).toString('base64url').slice(0, 12));
    }
  });

  it('uses a fresh ephemeral key and nonce for every sealing', () => {
    const boxes = Array.from({ length: 50 }, () => sealSecrets(recipient, secrets, binding));
    expect(new Set(boxes.map((b) => b.ephemeralKey)).size).toBe(50);
    expect(new Set(boxes.map((b) => b.nonce)).size).toBe(50);
  });

  it('does not open for another agent, another command, or after any part is changed', () => {
    // Attacks: a box captured from one command replayed inside another (even a correctly signed
    // one), delivered to another agent, or edited in transit.
    const sealed = sealSecrets(recipient, secrets, binding);
    const otherAgent = generateKeyPairSync('x25519');
    const attempts = [
      () => openSecrets(otherAgent.privateKey, sealed, binding),
      () =>
        openSecrets(agent.privateKey, sealed, { ...binding, commandId: 'cmd_01M81RY6C83Z2TQS77D61GDTTK' }),
      () => openSecrets(agent.privateKey, sealed, { ...binding, agentId: 'agt_01M81RY40N1Y2JCEAVSPF3ZPQS' }),
      ...(['ephemeralKey', 'nonce', 'ciphertext', 'tag'] as const).map((part) => () => {
        const bytes = Buffer.from(sealed[part], 'base64url');
        bytes[0]! ^= 0x01;
        return openSecrets(agent.privateKey, { ...sealed, [part]: bytes.toString('base64url') }, binding);
      }),
    ];
    for (const attempt of attempts) expect(attempt).toThrow(SealedSecretsError);
  });

  it('refuses a box whose shape is wrong before any cryptography', () => {
    const sealed = sealSecrets(recipient, secrets, binding);
    expect(SealedSecrets.safeParse({ ...sealed, alg: 'none' }).success).toBe(false);
    expect(SealedSecrets.safeParse({ ...sealed, tag: sealed.tag.slice(0, 8) }).success).toBe(false);
    expect(SealedSecrets.safeParse({ ...sealed, extra: 1 }).success).toBe(false);
  });
});
