import { useState } from 'react';

/** The tenant API key the page acts with (create one on the keys page, or paste one). */
export function TenantKeyField({ value, onChange }: { value: string; onChange: (key: string) => void }) {
  const [draft, setDraft] = useState(value);
  return (
    <form
      className="inline-form"
      onSubmit={(e) => {
        e.preventDefault();
        onChange(draft.trim());
      }}
    >
      <label>
        Tenant API key{' '}
        <input
          type="password"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="qm-..."
          autoComplete="off"
          size={40}
        />
      </label>
      <button type="submit">Use key</button>
      <span className="muted">
        {value ? `acting as the tenant of key ${value.slice(0, 10)}…` : 'no key set'}
      </span>
    </form>
  );
}
