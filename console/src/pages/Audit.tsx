// The audit log, newest first, filtered by window, actor and action (GET /admin/audit).
import { useState } from 'react';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { AuditRow, List } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Table } from '../components/Table';
import { dateTime } from '../lib/format';
import { useResource } from '../lib/useResource';

/** The most rows one window shows (the API lists oldest first). */
const LIMIT = 1000;

export function Audit() {
  const [windowMs, setWindowMs] = useState<number>(RANGES[1].ms);
  const [actor, setActor] = useState('');
  const [action, setAction] = useState('');
  const [filters, setFilters] = useState({ actor: '', action: '' });
  const rows = useResource(
    () =>
      admin<List<AuditRow>>(
        `/admin/audit${query({ since_ms: Date.now() - windowMs, limit: LIMIT, ...filters })}`,
      ),
    [windowMs, filters],
  );
  const data = rows.data?.data ?? [];
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
      </form>
      <ErrorAlert error={rows.error} />
      {data.length === LIMIT && (
        <p className="note">Showing the first {LIMIT} rows of this window: narrow it to see the latest.</p>
      )}
      <Table
        label="Audit log"
        rows={[...data].reverse()}
        rowKey={(r) => String(r.seq)}
        empty={rows.loading ? 'Loading…' : 'Nothing recorded in this window.'}
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
    </>
  );
}
