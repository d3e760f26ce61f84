import { useState } from 'react';
import { api, orgPath } from '../api';
import type { CommandView } from '../types';
import { ErrorNote } from './ui';

/** Approve or reject someone else's command, with a comment (kept in the audit log). */
export function Decide({ org, command, onDone }: { org: string; command: CommandView; onDone: () => void }) {
  const [comment, setComment] = useState('');
  const [error, setError] = useState<unknown>();
  const decide = async (verb: 'approve' | 'reject') => {
    setError(undefined);
    try {
      // The params as shown here: the server refuses the decision if the command changed since.
      await api('POST', orgPath(org, `/commands/${command.id}/${verb}`), {
        comment,
        paramsHash: command.paramsHash,
      });
      onDone();
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <form className="decide" onSubmit={(e) => e.preventDefault()}>
      <label htmlFor={`comment-${command.id}`}>Comment</label>
      <input
        id={`comment-${command.id}`}
        maxLength={500}
        value={comment}
        onChange={(e) => setComment(e.target.value)}
      />
      <div className="actions">
        <button type="button" className="primary" onClick={() => void decide('approve')}>
          Approve
        </button>
        <button type="button" className="danger" onClick={() => void decide('reject')}>
          Reject
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
