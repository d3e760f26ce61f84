import { useState } from 'react';
import { api, orgPath } from '../api';
import { useSignedIn } from '../session';
import type { CommandView } from '../types';
import { ErrorNote } from './ui';

/**
 * Approve or reject someone else's command, with a comment (kept in the audit log; a rejection must
 * say why). The requester is told someone else decides, and someone who has decided sees their
 * decision, not the buttons: the server refuses both anyway.
 */
export function Decide({ org, command, onDone }: { org: string; command: CommandView; onDone: () => void }) {
  const { user } = useSignedIn();
  const [comment, setComment] = useState('');
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  if (command.requestedBy === user.id)
    return <p className="muted">You asked for this command: someone else must approve or reject it.</p>;
  const mine = command.approvals.find((a) => a.userId === user.id);
  if (mine)
    return (
      <p className="muted">
        You {mine.decision} this command{mine.comment && `: ${mine.comment}`}.
      </p>
    );
  const decide = async (verb: 'approve' | 'reject') => {
    setError(undefined);
    setBusy(true);
    try {
      // The params as shown here: the server refuses the decision if the command changed since.
      await api('POST', orgPath(org, `/commands/${command.id}/${verb}`), {
        comment,
        paramsHash: command.paramsHash,
      });
      onDone();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  const hint = `comment-hint-${command.id}`;
  return (
    <form className="decide" onSubmit={(e) => e.preventDefault()}>
      <label htmlFor={`comment-${command.id}`}>Comment</label>
      <input
        id={`comment-${command.id}`}
        maxLength={500}
        value={comment}
        aria-describedby={hint}
        onChange={(e) => setComment(e.target.value)}
      />
      <small id={hint} className="muted">
        Optional to approve; a rejection must say why.
      </small>
      <div className="actions">
        <button type="button" className="primary" disabled={busy} onClick={() => void decide('approve')}>
          Approve
        </button>
        <button type="button" className="danger" disabled={busy} onClick={() => void decide('reject')}>
          Reject
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
