/** Sent in `hello` so operators see which agent build each host runs. Bumped with package.json. */
export const AGENT_VERSION = '0.1.0';
