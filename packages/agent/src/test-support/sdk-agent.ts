import path from 'node:path';
import { createLogger } from '../log.js';
import { type EmbeddedAgent, type SdkService, startEmbeddedAgent } from '../sdk.js';
import { writeStateFile } from '../state.js';
import { agentStateFor } from './agent-state.js';
import type { FakeServer } from './fake-server.js';

export interface SdkAgent {
  agent: EmbeddedAgent;
  /** The agent's own JSON log lines. */
  lines: string[];
  stateFile: string;
  stop(): Promise<void>;
}

/** An embedded agent (the SDK, in this process) registered with `server`, online with `services`. */
export async function startSdkAgent(
  server: FakeServer,
  dir: string,
  services: SdkService[],
  options: { roots?: string[]; graceMs?: number } = {},
): Promise<SdkAgent> {
  const stateFile = path.join(
    dir,
    'state',
    `agent-${Date.now()}-${Math.random().toString(36).slice(2)}.json`,
  );
  await writeStateFile(stateFile, agentStateFor(server));
  const lines: string[] = [];
  const since = server.received.length;
  const agent = await startEmbeddedAgent({
    stateFile,
    services,
    ...(options.roots ? { roots: options.roots } : {}),
    graceMs: options.graceMs ?? 300,
    logger: createLogger({ level: 'debug', write: (line) => lines.push(line) }),
  });
  await server.next('command_states', since);
  return {
    agent,
    lines,
    stateFile,
    async stop() {
      await agent.stop();
    },
  };
}
