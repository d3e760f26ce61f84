import { useMemo, useState } from 'react';
import { useNavigate, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { LoadFailed, NotFound } from '../components/dead-end';
import { initialValues, paramsOf, SchemaFields } from '../components/schema-form';
import { ErrorNote, Field, Loading, Modal, RiskBadge, StatusBadge, useLoad } from '../components/ui';
import type { ActionView, CommandPolicy, CommandView, ServiceView } from '../types';

function describeRule(policy: CommandPolicy | undefined, action: ActionView): string {
  const rule = policy?.[action.risk];
  if (!rule) return '';
  const parts = [];
  if (rule.approvals > 0)
    parts.push(`${rule.approvals} approval${rule.approvals > 1 ? 's' : ''} by someone other than you`);
  if (rule.stepUp) parts.push('a recent sign-in by you and each approver');
  return parts.length > 0
    ? `It needs ${parts.join(' and ')} before it runs.`
    : 'It runs as soon as you confirm.';
}

function RunForm(props: { org: string; service: ServiceView; action: ActionView; policy?: CommandPolicy }) {
  const { org, service, action, policy } = props;
  const navigate = useNavigate();
  const [values, setValues] = useState(() => initialValues(action.params));
  const [reason, setReason] = useState('');
  const [submitted, setSubmitted] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  // One key per confirmed attempt: a double submit, or a retry after a lost answer, runs it once.
  const [idempotencyKey, setIdempotencyKey] = useState(() => crypto.randomUUID());
  const { params, problems } = useMemo(() => paramsOf(action.params, values), [action.params, values]);
  // The server refuses a critical command without a reason: approvers and the log must know why.
  const reasonRequired = action.risk === 'critical';
  const reasonMissing = reasonRequired && reason.trim() === '';
  const valid = Object.keys(problems).length === 0 && !reasonMissing;
  // Held for approvals by policy: confirming asks for them, it does not run anything yet.
  const needsApproval = (policy?.[action.risk]?.approvals ?? 0) > 0;

  return (
    <>
      <form
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          setSubmitted(true);
          if (valid) setConfirming(true);
        }}
      >
        <SchemaFields
          schema={action.params}
          values={values}
          problems={problems}
          showProblems={submitted}
          onChange={setValues}
        />
        <Field
          label={reasonRequired ? 'Reason (required)' : 'Reason (optional)'}
          hint={
            reasonRequired
              ? 'A critical action needs a reason. Shown to approvers and kept in the audit log.'
              : 'Shown to approvers and kept in the audit log.'
          }
          {...(submitted && reasonMissing ? { error: 'Say why this critical action should run.' } : {})}
        >
          {(id, describedBy) => (
            <input
              id={id}
              maxLength={500}
              value={reason}
              required={reasonRequired}
              aria-invalid={submitted && reasonMissing}
              aria-describedby={describedBy}
              onChange={(e) => setReason(e.target.value)}
            />
          )}
        </Field>
        {submitted && !valid && (
          <p className="notice error" role="alert">
            {reasonMissing && Object.keys(problems).length === 0
              ? 'A critical action needs a reason.'
              : 'Some parameters need attention.'}
          </p>
        )}
        <button type="submit" className="primary">
          Review and run
        </button>
      </form>
      {confirming && (
        <Modal
          title={needsApproval ? `Request approval to run ${action.name}?` : `Run ${action.name}?`}
          onClose={() => setConfirming(false)}
        >
          <dl className="summary">
            <div>
              <dt>Agent</dt>
              <dd>{service.agent.name}</dd>
            </div>
            <div>
              <dt>Service</dt>
              <dd>{service.name}</dd>
            </div>
            <div>
              <dt>Action</dt>
              <dd>
                {action.name} <RiskBadge risk={action.risk} />
              </dd>
            </div>
            <div>
              <dt>Parameters</dt>
              <dd>
                <code>{JSON.stringify(params)}</code>
              </dd>
            </div>
          </dl>
          {reason && (
            <p>
              Reason: <q>{reason}</q>
            </p>
          )}
          <p>{describeRule(policy, action)}</p>
          <ErrorNote error={error} />
          <div className="actions">
            <button type="button" onClick={() => setConfirming(false)} disabled={busy}>
              Cancel
            </button>
            <button
              type="button"
              className={action.risk === 'low' ? 'primary' : 'danger'}
              disabled={busy}
              onClick={async () => {
                setBusy(true);
                setError(undefined);
                try {
                  const command = await api<CommandView>(
                    'POST',
                    orgPath(org, '/commands'),
                    {
                      agent: service.agent.id,
                      service: service.name,
                      action: action.name,
                      params,
                      reason,
                      confirm: true,
                    },
                    { 'idempotency-key': idempotencyKey },
                  );
                  navigate(`/orgs/${org}/commands/${command.id}`);
                } catch (failure) {
                  setError(failure);
                  setBusy(false);
                  setIdempotencyKey(crypto.randomUUID());
                }
              }}
            >
              {needsApproval ? 'Request approval' : `Run ${action.name}`}
            </button>
          </div>
        </Modal>
      )}
    </>
  );
}

export default function RunActionPage() {
  const { org = '', agent = '', service: serviceName = '', action: actionName = '' } = useParams();
  const { data, error } = useLoad(
    () =>
      Promise.all([
        api<{ services: ServiceView[] }>(
          'GET',
          orgPath(org, `/services?agent=${encodeURIComponent(agent)}&limit=200`),
        ),
        api<CommandPolicy>('GET', orgPath(org, '/command-policy')).catch(() => undefined),
      ]),
    [org, agent],
  );
  if (error) return <LoadFailed error={error} what="action" />;
  if (!data) return <Loading what="the action" />;
  const [{ services }, policy] = data;
  const service = services.find((s) => s.name === serviceName);
  const action = service?.actions.find((a) => a.name === actionName);
  if (!service || !action) return <NotFound what="service and action on this agent" />;
  return (
    <section>
      <h1>
        Run {action.name} <RiskBadge risk={action.risk} />
      </h1>
      <p className="muted">
        {service.name} on {service.agent.name} · {action.description} · times out after{' '}
        {action.timeoutSeconds} s
      </p>
      {service.available ? (
        <RunForm org={org} service={service} action={action} {...(policy ? { policy } : {})} />
      ) : (
        // The server refuses commands to a disabled or revoked agent; the form says so first.
        <div className="unavailable-note" role="note">
          <p>
            <StatusBadge status={service.agent.status} /> Unavailable: {service.unavailableReason}
          </p>
          <button type="button" disabled>
            Run {action.name}
          </button>
        </div>
      )}
    </section>
  );
}
