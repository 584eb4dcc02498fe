import { asApiError } from '../api/http';

/** An API error (or any error), visibly: its message, its code and status. */
export function ErrorAlert({ error }: { error: unknown }) {
  if (!error) return null;
  const e = asApiError(error);
  const detail = [e.code, e.status ? `HTTP ${e.status}` : null].filter(Boolean).join(', ');
  return (
    <div role="alert" className="alert">
      {e.message}
      {detail && <span className="muted"> ({detail})</span>}
    </div>
  );
}
