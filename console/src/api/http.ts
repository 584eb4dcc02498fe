// One HTTP call to the gateway, JSON in and out. Every gateway error is
// {"error": {"message", "type", "code"}} with its status; it becomes an ApiError.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

interface ErrorEnvelope {
  error?: { message?: string; code?: string | null; type?: string };
}

/** The gateway's error envelope in `text`, if it is one. */
function envelope(text: string): { message: string; code: string | null } | null {
  try {
    const body = JSON.parse(text) as ErrorEnvelope;
    if (body.error?.message) {
      return { message: body.error.message, code: body.error.code ?? body.error.type ?? null };
    }
  } catch {
    // Not JSON (a proxy's page, say).
  }
  return null;
}

/** The ApiError an error response's status and body text stand for. */
export function apiError(status: number, text: string): ApiError {
  const e = envelope(text);
  return e
    ? new ApiError(status, e.message, e.code)
    : new ApiError(status, `HTTP ${status}: ${text.slice(0, 200) || 'no body'}`, null);
}

/** Anything thrown, as an ApiError (the AI SDK throws an error body as its message). */
export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const parsed = envelope(message);
  return new ApiError(0, parsed?.message ?? message, parsed?.code ?? null);
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'DELETE';
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as `Authorization: Bearer ...`. */
  bearer?: string | null;
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.bearer) headers.authorization = `Bearer ${options.bearer}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method: options.method ?? 'GET',
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  if (!response.ok) throw apiError(response.status, text);
  return (text ? JSON.parse(text) : null) as T;
}

/** A query string from the defined, non-empty values. */
export function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
