import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { axisTime } from '../lib/format';

export interface Series {
  key: string;
  label: string;
  color: string;
}

interface Props<T> {
  title: string;
  data: T[];
  /** The x value of a point (ms since the epoch). */
  x: keyof T & string;
  series: Series[];
  /** How values read on the axis and in the tooltip. */
  format: (v: number) => string;
  windowMs: number;
}

/** What recharts passes a line's dot renderer (the fields used here). */
interface DotProps {
  key?: string;
  index: number;
  cx?: number | null;
  cy?: number | null;
  stroke?: string;
  points?: { value?: unknown }[];
}

const present = (v: unknown): boolean => v != null && !(Array.isArray(v) && v[1] == null);

/** A dot on a point whose neighbours have no value (an empty bucket, or the window's edge):
 * a lone point draws no line, and one joined across gaps would not show where it is. */
function IsolatedDot(props: DotProps) {
  const { index, cx, cy, stroke, points = [] } = props;
  const key = props.key ?? `dot-${index}`;
  const isolated =
    cx != null &&
    cy != null &&
    present(points[index]?.value) &&
    !present(points[index - 1]?.value) &&
    !present(points[index + 1]?.value);
  return isolated ? (
    <circle key={key} className="recharts-line-dot" cx={cx} cy={cy} r={3} fill={stroke} stroke={stroke} />
  ) : (
    <g key={key} />
  );
}

/** Lines over time, one per series; points without neighbours as dots. Empty buckets
 * (no value) are bridged. */
export function TimeChart<T>({ title, data, x, series, format, windowMs }: Props<T>) {
  return (
    <figure className="chart" aria-label={title}>
      <figcaption>{title}</figcaption>
      <ResponsiveContainer width="100%" height={200}>
        <LineChart data={data} margin={{ top: 8, right: 16, bottom: 0, left: 8 }}>
          <CartesianGrid stroke="#e5e7eb" vertical={false} />
          <XAxis
            dataKey={x}
            type="number"
            scale="time"
            domain={['dataMin', 'dataMax']}
            tickFormatter={(t: number) => axisTime(t, windowMs)}
            fontSize={11}
          />
          <YAxis tickFormatter={format} fontSize={11} width={64} />
          <Tooltip
            labelFormatter={(t: number) => new Date(t).toLocaleString()}
            formatter={(v: number) => format(v)}
          />
          <Legend />
          {series.map((s) => (
            <Line
              key={s.key}
              dataKey={s.key}
              name={s.label}
              stroke={s.color}
              dot={IsolatedDot}
              isAnimationActive={false}
              connectNulls
            />
          ))}
        </LineChart>
      </ResponsiveContainer>
    </figure>
  );
}
