// The signed-in operator and their two-factor authentication: enrol TOTP (a QR code and
// the otpauth URI for an authenticator app), confirm it with a code; an admin resets
// another operator's lost one (GET /admin/me, POST /admin/mfa/enroll,
// POST /admin/mfa/confirm, DELETE /admin/operators/{actor}/mfa).
import { useEffect, useRef, useState } from 'react';
import QRCode from 'qrcode';
import { admin, allows } from '../api/admin';
import type { Enrollment, Me } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Stat } from '../components/Stat';
import { useResource } from '../lib/useResource';
import { useSession } from '../session';

export function Account() {
  const { session } = useSession();
  const me = useResource(() => admin<Me>('/admin/me'), []);
  const [enrollment, setEnrollment] = useState<Enrollment | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [confirmed, setConfirmed] = useState(false);

  async function enroll() {
    setError(null);
    try {
      setEnrollment(await admin<Enrollment>('/admin/mfa/enroll', { method: 'POST', body: {} }));
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
          }}
        />
      )}
      {confirmed && <p role="status">Two-factor authentication is on: signing in now asks for a code.</p>}
      {allows(session.role, 'admin') && <Reset />}
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

/** An admin ends another operator's second factor (and their sessions), e.g. for a lost phone. */
function Reset() {
  const [actor, setActor] = useState('');
  const [done, setDone] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function reset() {
    const who = actor.trim();
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
    } catch (e) {
      setError(e);
    }
  }

  return (
    <section aria-label="Reset an operator's second factor">
      <h2>Reset an operator's second factor</h2>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void reset();
        }}
      >
        <label>
          Operator{' '}
          <input
            value={actor}
            onChange={(e) => setActor(e.target.value)}
            placeholder="operator:NAME"
            required
          />
        </label>
        <button type="submit" className="danger">
          Reset
        </button>
      </form>
      <ErrorAlert error={error} />
      {done && <p role="status">{done}</p>}
    </section>
  );
}
