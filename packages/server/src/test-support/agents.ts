import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { AGENT_REGISTER_PATH, RegisterResponse, rawPublicKey } from '@bulwark/protocol';

/** An agent's two key pairs, as `bulwark-agent register` makes them. */
export interface AgentKeys {
  signing: { publicKey: KeyObject; privateKey: KeyObject };
  encryption: { publicKey: KeyObject; privateKey: KeyObject };
}

export function agentKeys(): AgentKeys {
  return { signing: generateKeyPairSync('ed25519'), encryption: generateKeyPairSync('x25519') };
}

/** Registers over the real HTTP API, the way the agent does; throws with the answer when refused. */
export async function registerAgent(
  base: string,
  token: string,
  name: string,
  keys: AgentKeys = agentKeys(),
) {
  const response = await fetch(`${base}${AGENT_REGISTER_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      token,
      name,
      signingKey: rawPublicKey(keys.signing.publicKey),
      encryptionKey: rawPublicKey(keys.encryption.publicKey),
    }),
  });
  const body: unknown = await response.json();
  if (response.status !== 201)
    throw new Error(`registration answered ${response.status}: ${JSON.stringify(body)}`);
  return { ...RegisterResponse.parse(body), keys };
}
