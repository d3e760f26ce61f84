import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentMessage } from '@bulwark/protocol';
import { parseConfig } from '../config.js';
import { type AgentRunner, startAgent } from '../connection.js';
import { type CommandJournal, journalFileFor, openJournal } from '../journal.js';
import { createLogger } from '../log.js';
import type { AgentState } from '../state.js';
import { agentStateFor } from './agent-state.js';
import type { FakeServer } from './fake-server.js';

/** Node, as an absolute path: exec actions in tests run small inline scripts with it. */
export const NODE = process.execPath;

/** An exec action of service `app` (risk low, 60 s), as agent.yaml would declare it. */
export function execAction(
  name: string,
  params: Record<string, unknown>,
  exec: Record<string, unknown>,
): Record<string, unknown> {
  return { name, description: name, params, risk: 'low', timeoutSeconds: 60, exec };
}

/** agent.yaml (JSON is YAML) with one service `app` carrying `actions`. */
export function appConfig(actions: Record<string, unknown>[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    stateFile: 'state.json',
    ...extra,
    services: [{ name: 'app', kind: 'test', health: { status: 'up' }, actions }],
  });
}

export interface CommandAgent {
  agent: AgentRunner;
  journal: CommandJournal;
  state: AgentState;
  lines: string[];
  /** Stops the agent and closes the journal. */
  stop(): Promise<void>;
}

/** Starts an agent (in this process) with `configText` as agent.yaml in `dir`, online with `server`. */
export async function startCommandAgent(
  server: FakeServer,
  dir: string,
  configText: string,
  options: { state?: AgentState; killGraceMs?: number } = {},
): Promise<CommandAgent> {
  const file = path.join(dir, 'agent.yaml');
  await writeFile(file, configText);
  const config = parseConfig(configText, file);
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', write: (line) => lines.push(line) });
  const journal = await openJournal(journalFileFor(config.stateFile), { logger });
  const state = options.state ?? agentStateFor(server);
  const since = server.received.length;
  const agent = startAgent({
    state,
    services: config.services,
    actions: config.actions,
    allowedRoots: config.allowedRoots,
    journal,
    logger,
    killGraceMs: options.killGraceMs ?? 300,
  });
  await server.next('command_states', since);
  return {
    agent,
    journal,
    state,
    lines,
    async stop() {
      await agent.stop();
      await journal.close();
    },
  };
}

/** The final answer of the agent for a command: finished or refused. */
export function outcomeOf(server: FakeServer, commandId: string) {
  return server
    .waitFor(
      (m) => (m.type === 'command_finished' || m.type === 'command_refused') && m.commandId === commandId,
      0,
    )
    .then(
      (entry) => entry.message as Extract<AgentMessage, { type: 'command_finished' | 'command_refused' }>,
    );
}

/** Everything the command printed on one stream, in order. */
export function outputOf(server: FakeServer, commandId: string, stream?: 'stdout' | 'stderr'): string {
  return server.received
    .map((entry) => entry.message)
    .filter(
      (m): m is Extract<AgentMessage, { type: 'command_output' }> =>
        m.type === 'command_output' && m.commandId === commandId && (!stream || m.stream === stream),
    )
    .sort((a, b) => a.seq - b.seq)
    .map((m) => m.data)
    .join('');
}

/** Whether a process is alive: it exists and is not a zombie (no reaper may be running here). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Waits until `pid` is dead. A process that is not our child sends no event when it dies, so this
 * polls /proc, bounded; it waits for a fact, not for an amount of time.
 */
export async function untilDead(pid: number, withinMs = 5000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return !isAlive(pid);
}
