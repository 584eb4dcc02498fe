// Tenants with their plan, billing state and usage, their limits and budgets with what they
// spent in the budgets' windows; end users' usage
// (GET /admin/tenants, GET /admin/usage?by=tenant|user).
import { useState } from 'react';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { List, Tenant, UsageRow } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Table } from '../components/Table';
import { int, pct, usd } from '../lib/format';
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
          <h2>Limits and budgets</h2>
          <p className="muted">
            Budgets are per UTC day and month; spend is what the tenant used in them so far.
          </p>
          <Table
            label="Limits and budgets"
            rows={d.tenants}
            rowKey={(t) => t.id}
            empty="No tenants yet."
            columns={[
              { label: 'Tenant', render: (t) => t.name },
              { label: 'Requests / min', render: (t) => rate(t.limits?.requests_per_minute), numeric: true },
              { label: 'Tokens / min', render: (t) => rate(t.limits?.tokens_per_minute), numeric: true },
              {
                label: 'Today',
                render: (t) => (
                  <Budget spent={t.spend_today_usd} limit={t.limits?.usd_per_day} period="today" />
                ),
              },
              {
                label: 'This month',
                render: (t) => (
                  <Budget spent={t.spend_month_usd} limit={t.limits?.usd_per_month} period="this month" />
                ),
              },
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

const rate = (n: number | null | undefined): string => (n == null ? 'no limit' : int(n));

/** Spend against a budget: "$1.20 of $5.00 today" and a bar, or the spend and "no limit". */
function Budget({
  spent,
  limit,
  period,
}: {
  spent: number | undefined;
  limit: number | null | undefined;
  period: string;
}) {
  const s = spent ?? 0;
  if (limit == null) {
    return (
      <span>
        {usd(s)} {period} <span className="muted">· no limit</span>
      </span>
    );
  }
  const share = limit > 0 ? s / limit : 1;
  return (
    <div className="budget">
      <span>
        {usd(s)} of {usd(limit)} {period}
      </span>
      <div
        className={`bar${share >= 1 ? ' over' : share >= 0.8 ? ' near' : ''}`}
        role="meter"
        aria-label={`Spend ${period} of the budget`}
        aria-valuemin={0}
        aria-valuemax={limit}
        aria-valuenow={Math.min(s, limit)}
        aria-valuetext={`${pct(share)} of the budget`}
      >
        <div style={{ width: `${Math.min(share, 1) * 100}%` }} />
      </div>
    </div>
  );
}
