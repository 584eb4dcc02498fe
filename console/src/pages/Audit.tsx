// The audit log, newest first, filtered by window, actor and action; older rows a page at a
// time (GET /admin/audit?order=desc, then `before` the oldest row shown).
import { useState } from 'react';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { AuditRow, List } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Table } from '../components/Table';
import { dateTime } from '../lib/format';
import { useResource } from '../lib/useResource';

/** Rows per page. */
const PAGE = 100;

interface Filters {
  actor: string;
  action: string;
}

/** Rows newest first: a page of the window's, before `before` (a sequence number) if given. */
const page = (sinceMs: number, filters: Filters, before?: number) =>
  admin<List<AuditRow>>(
    `/admin/audit${query({ order: 'desc', limit: PAGE, since_ms: sinceMs, before, ...filters })}`,
  );

/** The pages read after the first, of one first page (a reload starts again). */
interface Older {
  of: object;
  rows: AuditRow[];
  /** The last page was short: nothing older in the window. */
  end: boolean;
}

export function Audit() {
  const [windowMs, setWindowMs] = useState<number>(RANGES[3].ms);
  const [actor, setActor] = useState('');
  const [action, setAction] = useState('');
  const [filters, setFilters] = useState<Filters>({ actor: '', action: '' });
  const first = useResource(async () => {
    const sinceMs = Date.now() - windowMs;
    return { sinceMs, list: await page(sinceMs, filters) };
  }, [windowMs, filters]);
  const [older, setOlder] = useState<Older | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [olderError, setOlderError] = useState<unknown>(null);

  const f = first.data;
  const more = older && f && older.of === f ? older : null;
  const rows = f ? [...f.list.data, ...(more?.rows ?? [])] : [];
  const end = f ? (more ? more.end : f.list.data.length < PAGE) : true;

  async function loadOlder() {
    const oldest = rows.at(-1);
    if (!f || !oldest) return;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const next = await page(f.sinceMs, filters, oldest.seq);
      setOlder({
        of: f,
        rows: [...(more?.rows ?? []), ...next.data],
        end: next.data.length < PAGE,
      });
    } catch (e) {
      setOlderError(e);
    } finally {
      setLoadingOlder(false);
    }
  }

  return (
    <>
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setFilters({ actor: actor.trim(), action: action.trim() });
        }}
      >
        <RangePicker value={windowMs} onChange={setWindowMs} />
        <label>
          Actor <input value={actor} onChange={(e) => setActor(e.target.value)} placeholder="admin-key" />
        </label>
        <label>
          Action <input value={action} onChange={(e) => setAction(e.target.value)} placeholder="key.create" />
        </label>
        <button type="submit">Filter</button>
        <button type="button" onClick={first.reload}>
          Refresh
        </button>
      </form>
      <ErrorAlert error={first.error} />
      <Table
        label="Audit log"
        rows={rows}
        rowKey={(r) => String(r.seq)}
        empty={first.loading ? 'Loading…' : 'Nothing recorded in this window.'}
        columns={[
          { label: '#', render: (r) => r.seq, numeric: true },
          { label: 'When', render: (r) => dateTime(r.at) },
          { label: 'Actor', render: (r) => r.actor },
          { label: 'Action', render: (r) => r.action },
          { label: 'Target', render: (r) => r.target ?? '' },
          {
            label: 'Detail',
            render: (r) => (r.detail == null ? '' : <code>{JSON.stringify(r.detail)}</code>),
          },
        ]}
      />
      <ErrorAlert error={olderError} />
      {rows.length > 0 && (
        <div className="toolbar pager">
          <span className="muted">
            {rows.length} rows, newest first{end ? '; nothing older in this window' : ''}
          </span>
          {!end && (
            <button type="button" onClick={() => void loadOlder()} disabled={loadingOlder}>
              {loadingOlder ? 'Loading…' : `Older ${PAGE}`}
            </button>
          )}
        </div>
      )}
    </>
  );
}
