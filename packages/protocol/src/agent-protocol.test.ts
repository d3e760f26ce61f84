import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AgentMessage,
  agentProofStatement,
  ed25519PublicKey,
  ed25519VerificationKey,
  RegisterRequest,
  rawPublicKey,
  serverProofStatement,
  signStatement,
  verifyStatement,
} from './agent-protocol.js';

const nonce = () => randomBytes(32).toString('base64url');

describe('agent protocol', () => {
  it("never lets one side's signed statement pass as the other's", () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const nonces = { agentId: 'agt_01J00000000000000000000000', agentNonce: nonce(), serverNonce: nonce() };
    expect(serverProofStatement(nonces)).not.toBe(agentProofStatement(nonces));
    const signature = signStatement(privateKey, serverProofStatement(nonces));
    expect(verifyStatement(publicKey, serverProofStatement(nonces), signature)).toBe(true);
    // Reflection: the server's own signature offered back as the agent's proof.
    expect(verifyStatement(publicKey, agentProofStatement(nonces), signature)).toBe(false);
    expect(
      verifyStatement(publicKey, serverProofStatement({ ...nonces, serverNonce: nonce() }), signature),
    ).toBe(false);
    expect(verifyStatement(publicKey, serverProofStatement(nonces), 'not-a-signature')).toBe(false);
  });

  it('verifies with a raw key as with its KeyObject, and refuses another key or a malformed one', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const nonces = { agentId: 'agt_01J00000000000000000000000', agentNonce: nonce(), serverNonce: nonce() };
    const signature = signStatement(privateKey, agentProofStatement(nonces));
    const raw = rawPublicKey(publicKey);
    expect(verifyStatement(ed25519VerificationKey(raw), agentProofStatement(nonces), signature)).toBe(true);
    // Impersonation: a proof made with one agent's key, checked against another agent's key.
    const other = rawPublicKey(generateKeyPairSync('ed25519').publicKey);
    expect(verifyStatement(ed25519VerificationKey(other), agentProofStatement(nonces), signature)).toBe(
      false,
    );
    // A stored key that is not an Ed25519 key at all is a refusal, never an exception.
    expect(verifyStatement(ed25519VerificationKey('AAAA'), agentProofStatement(nonces), signature)).toBe(
      false,
    );
  });

  it('round-trips raw public keys and accepts only the canonical spelling of a key', () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const raw = rawPublicKey(publicKey);
    expect(rawPublicKey(ed25519PublicKey(raw))).toBe(raw);
    const request = { token: 'bwr_x', name: 'web-1', signingKey: raw, encryptionKey: nonce() };
    expect(RegisterRequest.safeParse(request).success).toBe(true);
    // The same 32 bytes spelled with the last character's spare bits set: refused, so a key already
    // registered cannot be registered again under another spelling.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = alphabet.indexOf(raw.at(-1)!);
    const respelled = raw.slice(0, -1) + alphabet[last | 1];
    expect(Buffer.from(respelled, 'base64url').equals(Buffer.from(raw, 'base64url'))).toBe(true);
    expect(RegisterRequest.safeParse({ ...request, signingKey: respelled }).success).toBe(false);
  });

  it('refuses messages of another version, unknown types and unknown fields', () => {
    const hello = {
      v: 1,
      type: 'hello',
      agentId: 'agt_01J00000000000000000000000',
      agentNonce: nonce(),
      agentVersion: '1',
    };
    expect(AgentMessage.safeParse(hello).success).toBe(true);
    expect(AgentMessage.safeParse({ ...hello, v: 2 }).success).toBe(false);
    expect(AgentMessage.safeParse({ ...hello, type: 'command' }).success).toBe(false);
    expect(AgentMessage.safeParse({ ...hello, admin: true }).success).toBe(false);
  });
});
