// The response cache: the index, entries and hits per tenant with the false-hit estimate,
// and invalidation by tag or tenant (GET /admin/cache, /admin/usage?by=tenant,
// POST /admin/cache/invalidate).
import { useState } from 'react';
import { admin, allows } from '../api/admin';
import { query } from '../api/http';
import type { CacheStats, List, Tenant, UsageRow } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Stat } from '../components/Stat';
import { Table } from '../components/Table';
import { int, pct, usd } from '../lib/format';
import { useResource } from '../lib/useResource';
import { useSession } from '../session';

const MONTH_MS = 30 * 86_400_000;

export function Cache() {
  const { session } = useSession();
  const data = useResource(async () => {
    const [stats, tenants, usage] = await Promise.all([
      admin<CacheStats>('/admin/cache'),
      admin<List<Tenant>>('/admin/tenants'),
      admin<List<UsageRow>>(`/admin/usage${query({ by: 'tenant', since_ms: Date.now() - MONTH_MS })}`),
    ]);
    return { stats, tenants: tenants.data, usage: usage.data };
  }, []);
  const d = data.data;
  const nameOf = (id: string) => d?.tenants.find((t) => t.id === id)?.name ?? id;
  const usageOf = (id: string) => d?.usage.find((u) => u.tenant === id);
  const hits = d?.usage.reduce((n, u) => n + u.cache_hits, 0) ?? 0;
  const requests = d?.usage.reduce((n, u) => n + u.requests, 0) ?? 0;

  return (
    <>
      <ErrorAlert error={data.error} />
      {d && (
        <>
          <div className="stats">
            <Stat label="Entries" value={int(d.stats.tenants.reduce((n, t) => n + t.entries, 0))} />
            <Stat label="Hits (30 days)" value={`${int(hits)} of ${int(requests)}`} />
            <Stat label="Hit rate (30 days)" value={pct(requests ? hits / requests : 0)} />
            <Stat label="Index" value={`${d.stats.index}${d.stats.index_loaded ? '' : ' (loading)'}`} />
            <Stat
              label="Indexed / tombstones"
              value={`${int(d.stats.indexed_entries)} / ${int(d.stats.tombstones)}`}
            />
            <Stat label="Similarity threshold" value={d.stats.threshold.toFixed(3)} />
            <Stat label="Max false-hit rate" value={pct(d.stats.max_false_hit_rate)} />
          </div>
          <h2>Per tenant</h2>
          <Table
            label="Cache per tenant"
            rows={d.stats.tenants}
            rowKey={(t) => t.tenant_id}
            empty="The cache is empty."
            columns={[
              { label: 'Tenant', render: (t) => nameOf(t.tenant_id) },
              { label: 'Entries', render: (t) => int(t.entries), numeric: true },
              {
                label: 'Hits (30 days)',
                render: (t) => int(usageOf(t.tenant_id)?.cache_hits ?? 0),
                numeric: true,
              },
              {
                label: 'Savings (30 days)',
                render: (t) => usd(usageOf(t.tenant_id)?.savings_usd ?? 0),
                numeric: true,
              },
              {
                label: 'False-hit estimate (30 days)',
                render: ({ false_hits_30d: f }) => (
                  <span className={f.rate > d.stats.max_false_hit_rate ? 'bad' : undefined}>
                    {pct(f.rate)} (95%: {pct(f.low)}–{pct(f.high)}), {int(f.wrong)} wrong of{' '}
                    {int(f.semantic_hits)} semantic hits
                  </span>
                ),
              },
            ]}
          />
          {allows(session.role, 'operator') && <Invalidate tenants={d.tenants} onDone={data.reload} />}
        </>
      )}
    </>
  );
}

function Invalidate({ tenants, onDone }: { tenants: Tenant[]; onDone: () => void }) {
  const [tags, setTags] = useState('');
  const [tenant, setTenant] = useState('');
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function invalidate(body: { tags: string[] } | { all: true }) {
    setError(null);
    setResult(null);
    try {
      const r = await admin<{ deleted: number }>('/admin/cache/invalidate', {
        method: 'POST',
        body: { ...body, ...(tenant ? { tenant } : {}) },
      });
      setResult(`Invalidated ${int(r.deleted)} ${r.deleted === 1 ? 'entry' : 'entries'}.`);
      onDone();
    } catch (e) {
      setError(e);
    }
  }

  const tagList = tags
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  return (
    <section aria-label="Invalidate">
      <h2>Invalidate</h2>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void invalidate({ tags: tagList });
        }}
      >
        <label>
          Tags (comma-separated) <input value={tags} onChange={(e) => setTags(e.target.value)} />
        </label>
        <label>
          Tenant{' '}
          <select value={tenant} onChange={(e) => setTenant(e.target.value)}>
            <option value="">Every tenant</option>
            {tenants.map((t) => (
              <option key={t.id} value={t.name}>
                {t.name}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={tagList.length === 0}>
          Invalidate tags
        </button>
        <button
          type="button"
          className="danger"
          disabled={!tenant}
          onClick={() => void invalidate({ all: true })}
        >
          Clear the tenant's cache
        </button>
      </form>
      <ErrorAlert error={error} />
      {result && <p role="status">{result}</p>}
    </section>
  );
}
