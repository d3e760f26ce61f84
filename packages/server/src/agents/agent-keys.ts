import type { DataKeyring } from '../secrets/data-keyring.js';
import { createRowSealer } from '../secrets/row-seal.js';
import type { AgentRow } from './agents.store.js';

type AgentKeys = Pick<AgentRow, 'id' | 'org_id' | 'signing_key' | 'encryption_key'>;

/**
 * An agent's public keys, sealed by the server when the agent registers (CMD-7, SEC-3). Someone who
 * can write the database but not read the master key could otherwise put keys of their own in the
 * agent's row, and then connect as the agent (and be sent its commands) or receive its commands'
 * secrets sealed to their key. The handshake and the sealing of secrets check the seal first.
 */
export function createAgentKeySeals(dataKeys: Pick<DataKeyring, 'activeKeyId' | 'deriveKeyFrom'>) {
  const sealer = createRowSealer(dataKeys, 'agent-keys');
  const parts = (agent: AgentKeys) => [agent.id, agent.org_id, agent.signing_key, agent.encryption_key];
  return {
    seal: (agent: AgentKeys) => sealer.seal(parts(agent)),
    holds: (agent: AgentKeys & Pick<AgentRow, 'key_seal'>) => sealer.holds(agent.key_seal, parts(agent)),
  };
}

export type AgentKeySeals = ReturnType<typeof createAgentKeySeals>;
