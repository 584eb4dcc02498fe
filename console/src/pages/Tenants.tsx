// Tenants with their plan, billing state and usage; end users' usage
// (GET /admin/tenants, GET /admin/usage?by=tenant|user).
import { useState } from 'react';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { List, Tenant, UsageRow } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Table } from '../components/Table';
import { int, usd } from '../lib/format';
import { useResource } from '../lib/useResource';

const usage = (by: 'tenant' | 'user', sinceMs: number) =>
  admin<List<UsageRow>>(`/admin/usage${query({ by, since_ms: sinceMs })}`);

export function Tenants() {
  const [windowMs, setWindowMs] = useState<number>(RANGES[3].ms);
  const data = useResource(async () => {
    const since = Date.now() - windowMs;
    const [tenants, byTenant, byUser] = await Promise.all([
      admin<List<Tenant>>('/admin/tenants'),
      usage('tenant', since),
      usage('user', since),
    ]);
    return { tenants: tenants.data, byTenant: byTenant.data, byUser: byUser.data };
  }, [windowMs]);
  const d = data.data;
  const usageOf = (id: string) => d?.byTenant.find((u) => u.tenant === id);
  const nameOf = (id: string) => d?.tenants.find((t) => t.id === id)?.name ?? id;

  return (
    <>
      <div className="toolbar">
        <RangePicker value={windowMs} onChange={setWindowMs} />
      </div>
      <ErrorAlert error={data.error} />
      {d && (
        <>
          <h2>Tenants</h2>
          <Table
            label="Tenants"
            rows={d.tenants}
            rowKey={(t) => t.id}
            empty="No tenants yet: creating a key creates its tenant."
            columns={[
              { label: 'Tenant', render: (t) => t.name },
              { label: 'Plan', render: (t) => t.plan },
              { label: 'Billing', render: (t) => t.billing_status },
              { label: 'Credit', render: (t) => usd(t.credit_cents / 100), numeric: true },
              { label: 'Requests', render: (t) => int(usageOf(t.id)?.requests ?? 0), numeric: true },
              {
                label: 'Tokens in / out',
                render: (t) =>
                  `${int(usageOf(t.id)?.tokens_in ?? 0)} / ${int(usageOf(t.id)?.tokens_out ?? 0)}`,
                numeric: true,
              },
              { label: 'Spend', render: (t) => usd(usageOf(t.id)?.spend_usd ?? 0), numeric: true },
              { label: 'Cache savings', render: (t) => usd(usageOf(t.id)?.savings_usd ?? 0), numeric: true },
            ]}
          />
          <h2>End users</h2>
          <Table
            label="End users"
            rows={d.byUser.filter((u) => !String(u.user).endsWith('/-'))}
            rowKey={(u) => String(u.user)}
            empty="No end users in this window."
            columns={[
              { label: 'Tenant', render: (u) => nameOf(String(u.user).split('/')[0] ?? '') },
              { label: 'User', render: (u) => String(u.user).split('/').slice(1).join('/') },
              { label: 'Requests', render: (u) => int(u.requests), numeric: true },
              { label: 'Spend', render: (u) => usd(u.spend_usd), numeric: true },
              { label: 'Cache hits', render: (u) => int(u.cache_hits), numeric: true },
            ]}
          />
        </>
      )}
    </>
  );
}
