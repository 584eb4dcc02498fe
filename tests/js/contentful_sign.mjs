// Signs a webhook request as Contentful does, with its own library
// (@contentful/node-apps-toolkit): prints the headers to send (as one JSON object) for a
// POST of QM_BODY to QM_PATH with QM_SECRET, signing QM_HEADERS (a JSON object) too
// (tests/it/cms.rs).
import { signRequest } from '@contentful/node-apps-toolkit';

const headers = JSON.parse(process.env.QM_HEADERS || '{}');
const signed = signRequest(process.env.QM_SECRET, {
  method: 'POST',
  path: process.env.QM_PATH,
  headers,
  body: process.env.QM_BODY,
}, process.env.QM_TIMESTAMP ? Number(process.env.QM_TIMESTAMP) : undefined);
process.stdout.write(JSON.stringify({ ...headers, ...signed }));
