/**
 * @bulwark/agent: the agent daemon, its executor and the SDK for embedding an agent in a Node service.
 * The agents issue builds them on this package; today it fixes the protocol version the agent speaks.
 */
export const AGENT_PROTOCOL_VERSION = 1;
