// Tenants' API keys: the list, a new key (its secret shown once), revoking
// (GET/POST /admin/keys, DELETE /admin/keys/{id}). Creating and revoking need the admin role.
import { useState } from 'react';
import { admin, allows } from '../api/admin';
import { storeTenantKey } from '../api/tenant';
import type { ApiKey, CreatedKey, List } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Table } from '../components/Table';
import { dateTime } from '../lib/format';
import { useResource } from '../lib/useResource';
import { useSession } from '../session';

export function Keys() {
  const { session } = useSession();
  const keys = useResource(() => admin<List<ApiKey>>('/admin/keys'), []);
  const [error, setError] = useState<unknown>(null);
  const isAdmin = allows(session.role, 'admin');

  async function revoke(k: ApiKey) {
    if (!window.confirm(`Revoke ${k.key_prefix}… of ${k.tenant_name}? Clients using it stop working.`))
      return;
    setError(null);
    try {
      await admin(`/admin/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
      keys.reload();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <>
      {isAdmin ? (
        <NewKey onCreated={keys.reload} />
      ) : (
        <p className="note">
          Creating and revoking keys needs the admin role; you are signed in as {session.role}.
        </p>
      )}
      <h2>Keys</h2>
      <ErrorAlert error={keys.error ?? error} />
      <Table
        label="Keys"
        rows={keys.data?.data ?? []}
        rowKey={(k) => k.id}
        empty={keys.loading ? 'Loading…' : 'No keys yet.'}
        columns={[
          { label: 'Key', render: (k) => <code>{k.key_prefix}…</code> },
          { label: 'Tenant', render: (k) => k.tenant_name },
          { label: 'Name', render: (k) => k.name },
          { label: 'End user', render: (k) => k.user_id ?? '' },
          { label: 'Created', render: (k) => dateTime(k.created_at) },
          {
            label: 'Status',
            render: (k) =>
              k.revoked_at ? (
                `revoked ${dateTime(k.revoked_at)}`
              ) : isAdmin ? (
                <button type="button" className="danger" onClick={() => void revoke(k)}>
                  Revoke
                </button>
              ) : (
                'active'
              ),
          },
        ]}
      />
    </>
  );
}

function NewKey({ onCreated }: { onCreated: () => void }) {
  const [tenant, setTenant] = useState('');
  const [name, setName] = useState('');
  const [user, setUser] = useState('');
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const [used, setUsed] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function create() {
    setError(null);
    setCreated(null);
    setUsed(false);
    try {
      const body = {
        tenant: tenant.trim(),
        name: name.trim() || 'default',
        ...(user.trim() ? { user: user.trim() } : {}),
      };
      setCreated(await admin<CreatedKey>('/admin/keys', { method: 'POST', body }));
      onCreated();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <section aria-label="New key">
      <h2>New key</h2>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void create();
        }}
      >
        <label>
          Tenant <input value={tenant} onChange={(e) => setTenant(e.target.value)} required />
        </label>
        <label>
          Name <input value={name} onChange={(e) => setName(e.target.value)} placeholder="default" />
        </label>
        <label>
          End user (optional) <input value={user} onChange={(e) => setUser(e.target.value)} />
        </label>
        <button type="submit">Create key</button>
      </form>
      <ErrorAlert error={error} />
      {created && (
        <div className="secret" role="status">
          <p>
            The key for <strong>{created.tenant}</strong>. Copy it now: it is shown only once.
          </p>
          <code data-testid="new-key-secret">{created.secret}</code>
          <div>
            <button type="button" onClick={() => void navigator.clipboard?.writeText(created.secret)}>
              Copy
            </button>
            <button
              type="button"
              onClick={() => {
                storeTenantKey(created.secret);
                setUsed(true);
              }}
            >
              Use for documents and playground
            </button>
            {used && (
              <span className="muted"> The documents and playground pages now act as {created.tenant}.</span>
            )}
          </div>
        </div>
      )}
    </section>
  );
}
