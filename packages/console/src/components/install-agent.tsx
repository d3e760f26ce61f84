import { CopyButton, Field, Modal, When } from './ui';

/** Where the install line puts things; the same paths as packages/agent/bulwark-agent.service. */
const EXECUTABLE = '/usr/local/bin/bulwark-agent';
const STATE_DIR = '/var/lib/bulwark-agent';

/** The server URL as one shell word: quoted unless it is plain (an IPv6 `[::1]` is a glob to sh). */
function shellWord(text: string): string {
  return /^[A-Za-z0-9:/._-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * One line, run on the host in the folder holding the `bulwark-agent` executable: installs it, makes
 * its system user and state directory, and registers. The token is not in it: `--token-stdin` makes
 * the agent ask for it without echo, so it stays out of `ps`, shell history and this copied text.
 */
export function installCommand(server: string): string {
  return [
    `sudo install -m 0755 bulwark-agent ${EXECUTABLE}`,
    `(id -u bulwark-agent >/dev/null 2>&1 || sudo useradd --system --home-dir ${STATE_DIR} --shell /usr/sbin/nologin bulwark-agent)`,
    `sudo install -d -m 0700 -o bulwark-agent -g bulwark-agent ${STATE_DIR}`,
    `sudo -u bulwark-agent ${EXECUTABLE} register --server ${shellWord(server)} --token-stdin --state ${STATE_DIR}/state.json`,
  ].join(' && ');
}

/** The registration token, shown once, and how to install an agent with it. */
export function InstallAgentDialog({
  token,
  expiresAt,
  onClose,
}: {
  token: string;
  expiresAt: string;
  onClose: () => void;
}) {
  const install = installCommand(location.origin);
  return (
    <Modal title="Registration token created" onClose={onClose}>
      <p className="notice">
        This token is shown only now. It expires <When at={expiresAt} />.
      </p>
      <Field label="Registration token">
        {(id) => <input id={id} readOnly value={token} className="mono" />}
      </Field>
      <div className="actions">
        <CopyButton text={token} label="Copy token" />
      </div>
      <Field
        label="Install command"
        hint="Run it on the host, in the folder holding the bulwark-agent executable (npm run package:agent builds it). It installs the agent, creates its user and state directory, and registers: paste the token when asked; it is not shown. Then describe the services in /etc/bulwark-agent/agent.yaml, install bulwark-agent.service and run systemctl enable --now bulwark-agent."
      >
        {(id, describedBy) => (
          <textarea
            id={id}
            aria-describedby={describedBy}
            readOnly
            rows={7}
            value={install}
            className="mono"
          />
        )}
      </Field>
      <div className="actions">
        <CopyButton text={install} label="Copy command" />
        <button type="button" className="primary" onClick={onClose}>
          Done
        </button>
      </div>
    </Modal>
  );
}
