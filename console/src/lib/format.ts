// How numbers and times read in the console.

const usdFormat = new Intl.NumberFormat('en-US', {
  style: 'currency',
  currency: 'USD',
  maximumFractionDigits: 4,
});
const intFormat = new Intl.NumberFormat('en-US');

export const usd = (n: number): string => usdFormat.format(n);
export const int = (n: number): string => intFormat.format(n);
export const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
export const ms = (n: number | null | undefined): string => (n == null ? '–' : `${Math.round(n)} ms`);

/** A time (ms since the epoch) in the browser's zone. */
export const dateTime = (t: number): string => new Date(t).toLocaleString();

/** A chart axis label: the time of day for a window of a day or less, else the date. */
export function axisTime(t: number, windowMs: number): string {
  const d = new Date(t);
  return windowMs <= 86_400_000
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString([], { month: 'short', day: 'numeric', hour: '2-digit' });
}
