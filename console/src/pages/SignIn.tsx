// Sign in with the admin key or an operator key; once the account has confirmed TOTP, the
// gateway answers `mfa_required` and the form asks for the code too.
import { useState } from 'react';
import { signIn } from '../api/admin';
import { ApiError } from '../api/http';
import type { Session } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';

interface Props {
  notice: string | null;
  onSignedIn: (s: Session) => void;
}

export function SignIn({ notice, onSignedIn }: Props) {
  const [key, setKey] = useState('');
  const [code, setCode] = useState('');
  const [needsCode, setNeedsCode] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit() {
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await signIn(key.trim(), needsCode ? code.trim() : undefined));
    } catch (e) {
      if (e instanceof ApiError && e.code === 'mfa_required') {
        setNeedsCode(true);
      } else {
        setError(e);
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="sign-in">
      <h1>Quartermaster console</h1>
      {notice && <p role="status">{notice}</p>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <label>
          Admin or operator key
          <input
            type="password"
            value={key}
            onChange={(e) => setKey(e.target.value)}
            autoComplete="current-password"
            required
            autoFocus
          />
        </label>
        {needsCode && (
          <label>
            Authentication code
            <input
              inputMode="numeric"
              pattern="[0-9]{6}"
              maxLength={6}
              value={code}
              onChange={(e) => setCode(e.target.value)}
              autoComplete="one-time-code"
              required
              autoFocus
            />
          </label>
        )}
        {needsCode && (
          <p className="muted">
            This account uses two-factor authentication: enter the 6-digit code from your authenticator app.
          </p>
        )}
        <ErrorAlert error={error} />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
