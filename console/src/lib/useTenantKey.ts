import { useState } from 'react';
import { storedTenantKey, storeTenantKey } from '../api/tenant';

/** The tenant key the documents and playground pages act with, kept for the session. */
export function useTenantKey(): [string, (key: string) => void] {
  const [key, setKey] = useState(storedTenantKey);
  return [
    key,
    (k: string) => {
      storeTenantKey(k);
      setKey(k);
    },
  ];
}
