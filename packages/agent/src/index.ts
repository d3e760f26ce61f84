/**
 * @bulwark/agent: the agent daemon (`bulwark-agent`) and the pieces an embedded agent or a test
 * drives directly: register, load the state, connect.
 */
export { AGENT_PROTOCOL_VERSION } from '@bulwark/protocol';
export { type Backoff, type BackoffOptions, createBackoff } from './backoff.js';
export { type AgentConfig, ConfigError, loadConfig, parseConfig } from './config.js';
export {
  type AgentRunner,
  type AgentRunOptions,
  checkHandshake,
  type HandshakeCheck,
  type RunOutcome,
  redactSecrets,
  startAgent,
} from './connection.js';
export { createLogger, type Logger, type LogLevel } from './log.js';
export { InsecureServerError, isLoopbackHost, type TlsPin } from './net.js';
export { RegisterError, type RegisterOptions, register } from './register.js';
export {
  type AgentState,
  DEFAULT_STATE_FILE,
  describeState,
  loadStateFile,
  StateFileError,
  writeStateFile,
} from './state.js';
export { AGENT_VERSION } from './version.js';
