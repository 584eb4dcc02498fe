// Where routing sent requests, per tier, reason and model; the tiers; the classifier's
// threshold and, when the gateway has evaluated it, its curve (GET /admin/routing).
import { useState } from 'react';
import {
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ReferenceLine,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from 'recharts';
import { admin } from '../api/admin';
import { query } from '../api/http';
import type { CurvePoint, Routing as RoutingData } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { RangePicker, RANGES } from '../components/RangePicker';
import { Stat } from '../components/Stat';
import { Table } from '../components/Table';
import { int, pct } from '../lib/format';
import { useResource } from '../lib/useResource';

const MEASURES: { key: Exclude<keyof CurvePoint, 'threshold'>; label: string; color: string }[] = [
  { key: 'accuracy', label: 'Accuracy', color: '#2563eb' },
  { key: 'strong_share', label: 'Sent to the strong tier', color: '#7c3aed' },
  { key: 'hard_to_cheap', label: 'Hard sent to cheap', color: '#dc2626' },
  { key: 'easy_to_strong', label: 'Easy sent to strong', color: '#d97706' },
];

export function Routing() {
  const [windowMs, setWindowMs] = useState<number>(RANGES[1].ms);
  const routing = useResource(
    () => admin<RoutingData>(`/admin/routing${query({ since_ms: Date.now() - windowMs })}`),
    [windowMs],
  );
  const r = routing.data;
  return (
    <>
      <div className="toolbar">
        <RangePicker value={windowMs} onChange={setWindowMs} />
      </div>
      <ErrorAlert error={routing.error} />
      {r && (
        <>
          <div className="stats">
            <Stat label="Classifier" value={r.classifier_ready ? 'ready' : 'not loaded'} />
            <Stat label="Hard-question threshold" value={r.threshold.toFixed(2)} />
            <Stat label="Requests" value={int(r.data.reduce((n, d) => n + d.requests, 0))} />
          </div>
          {r.tiers && (
            <>
              <h2>Tiers</h2>
              <Table
                label="Tiers"
                rows={r.tiers}
                rowKey={(t) => t.name}
                empty="No tiers configured: an alias goes to the local model."
                columns={[
                  { label: 'Tier', render: (t) => t.name },
                  { label: 'Models, in order', render: (t) => t.models.join(' → ') },
                  { label: 'Fallback tier', render: (t) => t.fallback ?? '–' },
                ]}
              />
            </>
          )}
          <h2>Decisions</h2>
          <Table
            label="Decisions"
            rows={r.data}
            rowKey={(d) => `${d.tier}/${d.reason}/${d.model}`}
            empty="No requests in this window."
            columns={[
              { label: 'Tier', render: (d) => d.tier ?? '–' },
              { label: 'Reason', render: (d) => d.reason ?? '–' },
              { label: 'Model', render: (d) => d.model },
              { label: 'Requests', render: (d) => int(d.requests), numeric: true },
            ]}
          />
          {r.curve && r.curve.length > 0 && <Curve points={r.curve} threshold={r.threshold} />}
        </>
      )}
    </>
  );
}

/** The classifier on the evaluation prompts at each threshold, the current one marked. */
function Curve({ points, threshold }: { points: CurvePoint[]; threshold: number }) {
  return (
    <>
      <h2>Threshold curve</h2>
      <figure className="chart" aria-label="Threshold curve">
        <figcaption>The classifier on the evaluation prompts, by threshold</figcaption>
        <ResponsiveContainer width="100%" height={260}>
          <LineChart data={points} margin={{ top: 8, right: 16, bottom: 0, left: 8 }}>
            <CartesianGrid stroke="#e5e7eb" vertical={false} />
            <XAxis dataKey="threshold" type="number" domain={[0, 1]} fontSize={11} />
            <YAxis tickFormatter={pct} domain={[0, 1]} fontSize={11} width={56} />
            <Tooltip formatter={(v: number) => pct(v)} labelFormatter={(t: number) => `threshold ${t}`} />
            <Legend />
            <ReferenceLine
              x={threshold}
              stroke="#6b7280"
              strokeDasharray="4 4"
              label={{ value: 'current', position: 'insideTopRight', fontSize: 11 }}
            />
            {MEASURES.map((m) => (
              <Line key={m.key} dataKey={m.key} name={m.label} stroke={m.color} isAnimationActive={false} />
            ))}
          </LineChart>
        </ResponsiveContainer>
      </figure>
    </>
  );
}
