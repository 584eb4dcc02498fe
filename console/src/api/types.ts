// The shapes of the gateway's answers the console reads (src/api/ on the Rust side).

export type Role = 'viewer' | 'operator' | 'admin';

export interface List<T> {
  object: 'list';
  data: T[];
}

/** POST /admin/session */
export interface Session {
  token: string;
  actor: string;
  role: Role;
  expires_at: number;
  mfa: { enrolled: boolean };
}

/** GET /admin/me */
export interface Me {
  actor: string;
  role: Role;
  mfa: { enrolled: boolean; pending: boolean };
}

/** POST /admin/mfa/enroll */
export interface Enrollment {
  secret: string;
  otpauth_uri: string;
}

/** One row of GET /admin/overview: totals of a period, a bucket or a group. */
export interface Totals {
  requests: number;
  errors: number;
  spend_usd: number;
  cache_hits: number;
  savings_usd: number;
  cache_hit_rate: number;
  p50_ms: number | null;
  p99_ms: number | null;
  ttft_p50_ms: number | null;
  ttft_p99_ms: number | null;
}

export interface Overview {
  since_ms: number;
  until_ms: number;
  bucket_ms: number;
  /** More requests were in the window than the gateway read (the newest are counted). */
  truncated?: boolean;
  totals: Totals;
  series: (Totals & { t: number })[];
  by_tenant: (Totals & { key: string })[];
  by_model: (Totals & { key: string })[];
  by_route: (Totals & { key: string })[];
}

/** GET /admin/tenants */
export interface Tenant {
  id: string;
  name: string;
  plan: string;
  billing_status: string;
  past_due_since: number | null;
  credit_cents: number;
  /** Its limits and budgets as configured (its own or the default); null: no limit. */
  limits: Limits;
  /** What it spent in the budgets' windows: today and this month (UTC). */
  spend_today_usd: number;
  spend_month_usd: number;
}

export interface Limits {
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
  usd_per_day: number | null;
  usd_per_month: number | null;
}

/** GET /admin/operators: the admin key, the operator keys, and identity users with an
 * enrolment (no role of their own then). */
export interface Operator {
  actor: string;
  role: Role | null;
  mfa: 'none' | 'pending' | 'enrolled';
}

/** GET /admin/usage?by=...: the group is under the `by` name. */
export interface UsageRow {
  requests: number;
  succeeded: number;
  tokens_in: number;
  tokens_out: number;
  spend_usd: number;
  cache_hits: number;
  savings_usd: number;
  [group: string]: string | number;
}

/** GET /admin/keys */
export interface ApiKey {
  id: string;
  tenant_id: string;
  tenant_name: string;
  name: string;
  key_prefix: string;
  created_at: number;
  revoked_at: number | null;
  user_id: string | null;
}

/** POST /admin/keys: the secret is in this answer only. */
export interface CreatedKey {
  id: string;
  secret: string;
  tenant: string;
  name: string;
  user: string | null;
}

/** A tier: its models in order, and the tier tried when they all fail. */
export interface Tier {
  name: string;
  models: string[];
  fallback: string | null;
}

/** GET /admin/routing */
export interface Routing {
  data: { tier: string | null; reason: string | null; model: string; requests: number }[];
  classifier_ready: boolean;
  threshold: number;
  tiers?: Tier[];
  /** The classifier scored on the evaluation prompts at each threshold; null without one. */
  curve?: CurvePoint[] | null;
}

/** Shares of the evaluation prompts (0 to 1) at one threshold. */
export interface CurvePoint {
  threshold: number;
  accuracy: number;
  strong_share: number;
  /** Hard prompts sent to the cheap tier (quality risk). */
  hard_to_cheap: number;
  /** Easy prompts sent to the strong tier (wasted cost). */
  easy_to_strong: number;
}

/** GET /admin/cache */
export interface CacheStats {
  index: string;
  index_loaded: boolean;
  indexed_entries: number;
  tombstones: number;
  snapshot_tenants_loaded: number;
  threshold: number;
  max_false_hit_rate: number;
  tenants: {
    tenant_id: string;
    entries: number;
    false_hits_30d: { semantic_hits: number; wrong: number; rate: number; low: number; high: number };
  }[];
}

/** GET /admin/jobs, /admin/jobs/dead */
export interface Job {
  id: string;
  kind: string;
  status: string;
  attempts: number;
  max_attempts: number;
  run_at: number;
  last_error: string | null;
  created_at: number;
  updated_at: number;
}

/** GET /admin/audit */
export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  detail: unknown;
}

/** GET /v1/documents */
export interface DocumentRecord {
  id: string;
  title: string | null;
  source: string | null;
  format: string;
  chunk_count: number;
  updated_at: number;
}

/** One item of POST /v1/documents */
export interface IngestResult {
  id: string | null;
  status: string;
  chunks?: number;
  error?: { message: string };
}

/** POST /v1/retrieve */
export interface RetrievedChunk {
  chunk_id: string;
  document_id: string;
  title: string | null;
  heading: string | null;
  text: string;
  score: number;
}

/** GET /v1/models: the chat models, and the embedding model (owned by `quartermaster`). */
export interface Model {
  id: string;
  owned_by: string;
}
