// The operator's session and every /admin call. Signing in exchanges the admin or operator
// key (and a TOTP code once enrolled) for a session token, kept in sessionStorage: the key
// itself is never stored. Every /admin call sends the token.
import { ApiError, request, type RequestOptions } from './http';
import type { Role, Session } from './types';

const STORAGE = 'qm.console.session';

export function storedSession(): Session | null {
  const text = sessionStorage.getItem(STORAGE);
  return text ? (JSON.parse(text) as Session) : null;
}

export async function signIn(key: string, code?: string): Promise<Session> {
  const session = await request<Session>('/admin/session', {
    method: 'POST',
    bearer: key,
    body: code ? { code } : {},
  });
  sessionStorage.setItem(STORAGE, JSON.stringify(session));
  return session;
}

/** Revokes the token (best effort: it expires anyway) and forgets it. */
export async function signOut(): Promise<void> {
  const session = storedSession();
  sessionStorage.removeItem(STORAGE);
  if (session) {
    await request('/admin/session', { method: 'DELETE', bearer: session.token }).catch(() => undefined);
  }
}

let onExpired: () => void = () => undefined;

/** What to do when the gateway no longer accepts the token (the app shows the sign-in). */
export function whenSessionExpires(handler: () => void): void {
  onExpired = handler;
}

/** 401s about a TOTP code: that code's error, not the session's. */
const CODE_ERRORS = new Set(['invalid_mfa_code', 'mfa_required']);

/** An /admin call with the session's token; a refused token ends the session. */
export async function admin<T>(path: string, options: Omit<RequestOptions, 'bearer'> = {}): Promise<T> {
  try {
    return await request<T>(path, { ...options, bearer: storedSession()?.token });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && !CODE_ERRORS.has(e.code ?? '')) {
      sessionStorage.removeItem(STORAGE);
      onExpired();
    }
    throw e;
  }
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

/** Whether `role` may do what needs `needed` (reading: viewer; changing the service:
 * operator; keys and users: admin). */
export function allows(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}
