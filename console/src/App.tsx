// The console: the sign-in until there is a session, then the left nav and the page the
// address names.
import { useEffect, useState } from 'react';
import { signOut, storedSession, whenSessionExpires } from './api/admin';
import type { Session } from './api/types';
import { PAGES } from './pages';
import { SignIn } from './pages/SignIn';
import { useHashRoute } from './lib/useHashRoute';
import { SessionContext } from './session';

export function App() {
  const [session, setSession] = useState<Session | null>(storedSession);
  const [notice, setNotice] = useState<string | null>(null);
  const route = useHashRoute();

  useEffect(() => {
    whenSessionExpires(() => {
      setSession(null);
      setNotice('Your session has ended: sign in again.');
    });
  }, []);

  if (!session) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );
  }
  const page = PAGES.find((p) => p.path === route) ?? PAGES[0]!;
  const Page = page.component;
  // Whoever signs in next starts at the overview (an expired session keeps its page).
  const end = () => {
    void signOut();
    setSession(null);
    window.location.hash = `#/${PAGES[0]!.path}`;
  };
  return (
    <SessionContext.Provider value={{ session, signOut: end }}>
      <div className="layout">
        <nav aria-label="Console">
          <div className="brand">Quartermaster</div>
          <ul>
            {PAGES.map((p) => (
              <li key={p.path}>
                <a href={`#/${p.path}`} aria-current={p === page ? 'page' : undefined}>
                  {p.label}
                </a>
              </li>
            ))}
          </ul>
          <div className="who">
            <div>{session.actor}</div>
            <div className="muted">{session.role}</div>
            <button type="button" onClick={end}>
              Sign out
            </button>
          </div>
        </nav>
        <main>
          <h1>{page.label}</h1>
          <Page />
        </main>
      </div>
    </SessionContext.Provider>
  );
}
