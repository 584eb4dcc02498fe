// The job queue: counts by status, the dead-letter queue with each job's last error and
// its re-drive, and the jobs of any status (GET /admin/jobs/stats, /admin/jobs/dead,
// /admin/jobs?status=, POST /admin/jobs/{id}/redrive, /admin/jobs/dead/redrive).
import { useState } from 'react';
import { admin, allows } from '../api/admin';
import type { Job, List } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Stat } from '../components/Stat';
import { Table, type Column } from '../components/Table';
import { dateTime, int } from '../lib/format';
import { useResource } from '../lib/useResource';
import { useSession } from '../session';

const STATUSES = ['queued', 'running', 'done', 'dead'] as const;
const REFRESH_MS = 5000;

const jobColumns: Column<Job>[] = [
  { label: 'Job', render: (j) => <code>{j.id}</code> },
  { label: 'Kind', render: (j) => j.kind },
  { label: 'Attempts', render: (j) => `${j.attempts} / ${j.max_attempts}`, numeric: true },
  { label: 'Last error', render: (j) => <span className="error-text">{j.last_error ?? ''}</span> },
  { label: 'Updated', render: (j) => dateTime(j.updated_at) },
];

export function Jobs() {
  const { session } = useSession();
  const canRedrive = allows(session.role, 'operator');
  const stats = useResource(
    () => admin<{ counts: Record<string, number> }>('/admin/jobs/stats'),
    [],
    REFRESH_MS,
  );
  const dead = useResource(() => admin<List<Job>>('/admin/jobs/dead'), [], REFRESH_MS);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<(typeof STATUSES)[number]>('queued');
  const others = useResource(
    () => admin<List<Job>>(`/admin/jobs?status=${status}&limit=100`),
    [status],
    REFRESH_MS,
  );

  async function redrive(path: string) {
    setError(null);
    try {
      await admin(path, { method: 'POST' });
    } catch (e) {
      setError(e);
    }
    dead.reload();
    stats.reload();
    others.reload();
  }

  const redriveColumn: Column<Job> = {
    label: '',
    render: (j) => (
      <button
        type="button"
        aria-label={`Re-drive ${j.id}`}
        onClick={() => void redrive(`/admin/jobs/${encodeURIComponent(j.id)}/redrive`)}
      >
        Re-drive
      </button>
    ),
  };
  const deadJobs = dead.data?.data ?? [];

  return (
    <>
      <ErrorAlert error={stats.error ?? dead.error ?? error} />
      <div className="stats">
        {STATUSES.map((s) => (
          <Stat key={s} label={s[0]!.toUpperCase() + s.slice(1)} value={int(stats.data?.counts[s] ?? 0)} />
        ))}
      </div>
      <h2>Dead letters</h2>
      {canRedrive && deadJobs.length > 1 && (
        <button type="button" onClick={() => void redrive('/admin/jobs/dead/redrive')}>
          Re-drive all {deadJobs.length}
        </button>
      )}
      <Table
        label="Dead letters"
        rows={deadJobs}
        rowKey={(j) => j.id}
        empty={dead.loading && !dead.data ? 'Loading…' : 'No dead jobs.'}
        columns={canRedrive ? [...jobColumns, redriveColumn] : jobColumns}
      />
      <h2>
        <label>
          Jobs{' '}
          <select value={status} onChange={(e) => setStatus(e.target.value as (typeof STATUSES)[number])}>
            {STATUSES.filter((s) => s !== 'dead').map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
      </h2>
      <ErrorAlert error={others.error} />
      <Table
        label="Jobs"
        rows={others.data?.data ?? []}
        rowKey={(j) => j.id}
        empty={`No ${status} jobs.`}
        columns={jobColumns}
      />
    </>
  );
}
