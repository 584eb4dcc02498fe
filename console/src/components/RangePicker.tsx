/** The time windows the console's reports offer, in ms. */
export const RANGES = [
  { label: 'Last hour', ms: 3_600_000 },
  { label: 'Last 24 hours', ms: 86_400_000 },
  { label: 'Last 7 days', ms: 7 * 86_400_000 },
  { label: 'Last 30 days', ms: 30 * 86_400_000 },
] as const;

export function RangePicker({ value, onChange }: { value: number; onChange: (ms: number) => void }) {
  return (
    <label>
      Window{' '}
      <select value={value} onChange={(e) => onChange(Number(e.target.value))}>
        {RANGES.map((r) => (
          <option key={r.ms} value={r.ms}>
            {r.label}
          </option>
        ))}
      </select>
    </label>
  );
}
