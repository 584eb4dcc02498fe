// Traffic over a window: totals, charts per time bucket, and tables per tenant, model and
// route (GET /admin/overview).
import { useState } from 'react';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { Overview as OverviewData, Tenant, Totals } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Stat } from '../components/Stat';
import { Table, type Column } from '../components/Table';
import { TimeChart } from '../components/TimeChart';
import { int, ms, pct, usd } from '../lib/format';
import { useResource } from '../lib/useResource';

type Group = Totals & { key: string };

const groupColumns = (label: string): Column<Group>[] => [
  { label, render: (r) => r.key },
  { label: 'Requests', render: (r) => int(r.requests), numeric: true },
  { label: 'Errors', render: (r) => int(r.errors), numeric: true },
  { label: 'Spend', render: (r) => usd(r.spend_usd), numeric: true },
  { label: 'Savings', render: (r) => usd(r.savings_usd), numeric: true },
  { label: 'Cache hit rate', render: (r) => pct(r.cache_hit_rate), numeric: true },
  { label: 'p50', render: (r) => ms(r.p50_ms), numeric: true },
  { label: 'p99', render: (r) => ms(r.p99_ms), numeric: true },
];

export function Overview() {
  const [windowMs, setWindowMs] = useState<number>(RANGES[1].ms);
  const [tenant, setTenant] = useState('');
  const tenants = useResource(() => admin<{ data: Tenant[] }>('/admin/tenants'), []);
  const overview = useResource(
    () => admin<OverviewData>(`/admin/overview${query({ since_ms: Date.now() - windowMs, tenant })}`),
    [windowMs, tenant],
  );
  const o = overview.data;
  return (
    <>
      <div className="toolbar">
        <RangePicker value={windowMs} onChange={setWindowMs} />
        <label>
          Tenant{' '}
          <select value={tenant} onChange={(e) => setTenant(e.target.value)}>
            <option value="">All tenants</option>
            {tenants.data?.data.map((t) => (
              <option key={t.id} value={t.name}>
                {t.name}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={overview.reload}>
          Refresh
        </button>
      </div>
      <ErrorAlert error={overview.error} />
      {o && (
        <>
          {o.truncated && (
            <p className="note">
              This window has more requests than one overview reads: the figures are of the newest.
            </p>
          )}
          <div className="stats">
            <Stat label="Requests" value={int(o.totals.requests)} />
            <Stat label="Errors" value={int(o.totals.errors)} />
            <Stat label="Spend" value={usd(o.totals.spend_usd)} />
            <Stat label="Cache savings" value={usd(o.totals.savings_usd)} />
            <Stat label="Cache hit rate" value={pct(o.totals.cache_hit_rate)} />
            <Stat label="Latency p50 / p99" value={`${ms(o.totals.p50_ms)} / ${ms(o.totals.p99_ms)}`} />
            <Stat label="First token p50" value={ms(o.totals.ttft_p50_ms)} />
          </div>
          <div className="charts">
            <TimeChart
              title="Requests and errors"
              data={o.series}
              x="t"
              windowMs={windowMs}
              format={int}
              series={[
                { key: 'requests', label: 'Requests', color: '#2563eb' },
                { key: 'errors', label: 'Errors', color: '#dc2626' },
              ]}
            />
            <TimeChart
              title="Spend and cache savings (USD)"
              data={o.series}
              x="t"
              windowMs={windowMs}
              format={usd}
              series={[
                { key: 'spend_usd', label: 'Spend', color: '#7c3aed' },
                { key: 'savings_usd', label: 'Savings', color: '#059669' },
              ]}
            />
            <TimeChart
              title="Cache hit rate"
              data={o.series}
              x="t"
              windowMs={windowMs}
              format={pct}
              series={[{ key: 'cache_hit_rate', label: 'Hit rate', color: '#059669' }]}
            />
            <TimeChart
              title="Latency"
              data={o.series}
              x="t"
              windowMs={windowMs}
              format={ms}
              series={[
                { key: 'p50_ms', label: 'p50', color: '#2563eb' },
                { key: 'p99_ms', label: 'p99', color: '#d97706' },
                { key: 'ttft_p50_ms', label: 'First token p50', color: '#0891b2' },
              ]}
            />
          </div>
          <h2>By tenant</h2>
          <Table
            label="By tenant"
            rows={o.by_tenant}
            columns={groupColumns('Tenant')}
            rowKey={(r) => r.key}
            empty="No requests in this window."
          />
          <h2>By model</h2>
          <Table
            label="By model"
            rows={o.by_model}
            columns={groupColumns('Model')}
            rowKey={(r) => r.key}
            empty="No requests in this window."
          />
          <h2>By route</h2>
          <Table
            label="By route"
            rows={o.by_route}
            columns={groupColumns('Route tier')}
            rowKey={(r) => r.key}
            empty="No requests in this window."
          />
        </>
      )}
    </>
  );
}
