/**
 * @bulwark/agent: the agent daemon (`bulwark-agent`), the SDK for embedding an agent in a Node
 * service (`action`, `defineService`, `startEmbeddedAgent`), and the pieces an embedded agent or a
 * test drives directly: register, load the state, connect.
 */
export { AGENT_PROTOCOL_VERSION } from '@bulwark/protocol';
export { type Backoff, type BackoffOptions, createBackoff } from './backoff.js';
export { type CommandRunner, createCommandRunner } from './commands.js';
export {
  type ActionCatalog,
  type AgentConfig,
  ConfigError,
  type ExecAction,
  type ExecSpec,
  type HandlerAction,
  loadConfig,
  parseConfig,
  type RunnableAction,
} from './config.js';
export { type ConfinedFs, ConfinedPathError, createConfinedFs } from './confined-fs.js';
export {
  type AgentRunner,
  type AgentRunOptions,
  checkHandshake,
  type HandshakeCheck,
  type RunOutcome,
  redactSecrets,
  startAgent,
} from './connection.js';
export {
  ENV_ALLOW_LIST,
  type Execution,
  type ExecutionRequest,
  type ExecutionResult,
  execute,
} from './executor.js';
export {
  type ActionContext,
  type ActionHandler,
  type ActionLogger,
  invokeHandler,
} from './handler.js';
export { type CommandJournal, JournalError, journalFileFor, openJournal } from './journal.js';
export { createLogger, type Logger, type LogLevel } from './log.js';
export { InsecureServerError, isLoopbackHost, type TlsPin } from './net.js';
export { RegisterError, type RegisterOptions, register } from './register.js';
export {
  type ActionDefinition,
  action,
  type ConfigItem,
  defineService,
  type EmbeddedAgent,
  type EmbeddedAgentOptions,
  type Health,
  type HealthStatus,
  paramsJsonSchema,
  type Risk,
  type SdkAction,
  SdkDefinitionError,
  type SdkService,
  type ServiceDefinition,
  startEmbeddedAgent,
} from './sdk.js';
export {
  type AgentState,
  DEFAULT_STATE_FILE,
  describeState,
  loadStateFile,
  StateFileError,
  writeStateFile,
} from './state.js';
export { type RefusalReason, type Verdict, verifyCommand } from './verify-command.js';
export { AGENT_VERSION } from './version.js';
