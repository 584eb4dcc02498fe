// The console's pages, in the nav's order; the first is the default.
import type { ComponentType } from 'react';
import { Account } from './Account';
import { Audit } from './Audit';
import { Cache } from './Cache';
import { Documents } from './Documents';
import { Jobs } from './Jobs';
import { Keys } from './Keys';
import { Overview } from './Overview';
import { Playground } from './Playground';
import { Routing } from './Routing';
import { Tenants } from './Tenants';

export interface PageEntry {
  /** The address fragment: `#/keys`. An unknown one shows the first page. */
  path: string;
  label: string;
  component: ComponentType;
}

export const PAGES: PageEntry[] = [
  { path: 'overview', label: 'Overview', component: Overview },
  { path: 'tenants', label: 'Tenants & users', component: Tenants },
  { path: 'keys', label: 'Keys', component: Keys },
  { path: 'routing', label: 'Routing', component: Routing },
  { path: 'cache', label: 'Cache', component: Cache },
  { path: 'documents', label: 'Documents', component: Documents },
  { path: 'jobs', label: 'Jobs', component: Jobs },
  { path: 'audit', label: 'Audit log', component: Audit },
  { path: 'playground', label: 'Playground', component: Playground },
  { path: 'account', label: 'Account', component: Account },
];
