// The signed-in operator and their two-factor authentication: enrol TOTP (a QR code and
// the otpauth URI for an authenticator app), confirm it with a code; the operators and
// their second factors, an admin resetting another's lost one (GET /admin/me,
// POST /admin/mfa/enroll, POST /admin/mfa/confirm, GET /admin/operators,
// DELETE /admin/operators/{actor}/mfa).
import { useEffect, useRef, useState } from 'react';
import QRCode from 'qrcode';
import { admin, allows } from '../api/admin';
import type { Enrollment, List, Me, Operator } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Stat } from '../components/Stat';
import { Table, type Column } from '../components/Table';
import { useResource } from '../lib/useResource';
import { useSession } from '../session';

export function Account() {
  const { session } = useSession();
  const me = useResource(() => admin<Me>('/admin/me'), []);
  const [enrollment, setEnrollment] = useState<Enrollment | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [confirmed, setConfirmed] = useState(false);
  /** Bumped when this operator's enrolment changes: the operators' list reloads. */
  const [version, setVersion] = useState(0);

  async function enroll() {
    setError(null);
    try {
      setEnrollment(await admin<Enrollment>('/admin/mfa/enroll', { method: 'POST', body: {} }));
      setVersion((v) => v + 1);
    } catch (e) {
      setError(e);
    }
  }

  const m = me.data;
  return (
    <>
      <ErrorAlert error={me.error ?? error} />
      {m && (
        <div className="stats">
          <Stat label="Signed in as" value={m.actor} />
          <Stat label="Role" value={m.role} />
          <Stat
            label="Two-factor authentication"
            value={m.mfa.enrolled ? 'on' : m.mfa.pending ? 'awaiting confirmation' : 'off'}
          />
        </div>
      )}
      {m && !m.mfa.enrolled && !enrollment && (
        <button type="button" onClick={() => void enroll()}>
          {m.mfa.pending ? 'Start two-factor set-up again' : 'Set up two-factor authentication'}
        </button>
      )}
      {enrollment && (
        <Confirm
          enrollment={enrollment}
          onConfirmed={() => {
            setEnrollment(null);
            setConfirmed(true);
            me.reload();
            setVersion((v) => v + 1);
          }}
        />
      )}
      {confirmed && <p role="status">Two-factor authentication is on: signing in now asks for a code.</p>}
      <Operators canReset={allows(session.role, 'admin')} version={version} />
    </>
  );
}

function Confirm({ enrollment, onConfirmed }: { enrollment: Enrollment; onConfirmed: () => void }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [code, setCode] = useState('');
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    if (canvas.current) void QRCode.toCanvas(canvas.current, enrollment.otpauth_uri, { width: 200 });
  }, [enrollment.otpauth_uri]);

  async function confirm() {
    setError(null);
    try {
      await admin('/admin/mfa/confirm', { method: 'POST', body: { code: code.trim() } });
      onConfirmed();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <section aria-label="Two-factor set-up">
      <h2>Scan with your authenticator app</h2>
      <canvas ref={canvas} aria-label="TOTP QR code" />
      <p>
        Or enter it by hand: <code data-testid="otpauth-uri">{enrollment.otpauth_uri}</code>
      </p>
      <p>
        Secret: <code>{enrollment.secret}</code>
      </p>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void confirm();
        }}
      >
        <label>
          Code from the app{' '}
          <input
            inputMode="numeric"
            pattern="[0-9]{6}"
            maxLength={6}
            value={code}
            onChange={(e) => setCode(e.target.value)}
            required
          />
        </label>
        <button type="submit">Confirm</button>
      </form>
      <ErrorAlert error={error} />
    </section>
  );
}

const MFA_STATE: Record<Operator['mfa'], string> = {
  none: 'off',
  pending: 'awaiting confirmation',
  enrolled: 'on',
};

/** Everyone who may sign in to the console, with their second factor; an admin ends another
 * operator's (and their sessions), e.g. for a lost phone. */
function Operators({ canReset, version }: { canReset: boolean; version: number }) {
  const list = useResource(() => admin<List<Operator>>('/admin/operators'), [version]);
  const [done, setDone] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function reset(who: string) {
    if (
      !window.confirm(
        `Remove the second factor of ${who}? Their sessions end; they sign in with their key alone.`,
      )
    )
      return;
    setError(null);
    setDone(null);
    try {
      await admin(`/admin/operators/${encodeURIComponent(who)}/mfa`, { method: 'DELETE' });
      setDone(`${who} signs in with their key alone now, and may enrol again.`);
      list.reload();
    } catch (e) {
      setError(e);
    }
  }

  const columns: Column<Operator>[] = [
    { label: 'Operator', render: (o) => o.actor },
    { label: 'Role', render: (o) => o.role ?? <span className="muted">none (an enrolment only)</span> },
    { label: 'Two-factor authentication', render: (o) => MFA_STATE[o.mfa] },
  ];
  if (canReset) {
    columns.push({
      label: 'Reset',
      render: (o) =>
        o.mfa === 'none' ? (
          ''
        ) : (
          <button
            type="button"
            className="danger"
            aria-label={`Reset the second factor of ${o.actor}`}
            onClick={() => void reset(o.actor)}
          >
            Reset second factor
          </button>
        ),
    });
  }

  return (
    <section aria-label="Operators">
      <h2>Operators</h2>
      <ErrorAlert error={list.error ?? error} />
      {list.data && (
        <Table
          label="Operators"
          rows={list.data.data}
          rowKey={(o) => o.actor}
          empty="No admin or operator keys are configured."
          columns={columns}
        />
      )}
      {done && <p role="status">{done}</p>}
      {!canReset && <p className="muted">Resetting a second factor needs the admin role.</p>}
    </section>
  );
}
