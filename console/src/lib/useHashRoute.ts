// The page in the address's fragment (`/console/#/keys`): deep links and the back button
// work without the gateway knowing the console's pages.
import { useEffect, useState } from 'react';

const current = (): string => window.location.hash.replace(/^#\/?/, '');

export function useHashRoute(): string {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const update = () => setRoute(current());
    window.addEventListener('hashchange', update);
    return () => window.removeEventListener('hashchange', update);
  }, []);
  return route;
}
