/** A person as others know them — name and email — with the id on hover; the id alone when the account is gone. */
export function Person({ id, name, email }: { id: string; name: string; email: string }) {
  const known = name || email;
  return (
    <span className="person" title={id}>
      {known ? name || email : <code>{id}</code>}
      {name && email && <span className="muted"> ({email})</span>}
    </span>
  );
}

/** An agent by its name, with the id on hover. */
export function AgentName({ id, name }: { id: string; name: string }) {
  return <span title={id}>{name || <code>{id}</code>}</span>;
}
