// Credentials made by the real libraries, for tests/it/identity.rs: JWTs signed with fresh
// RSA, EC (P-256) and Ed25519 keys by `jose` (with the JWKS that publishes them, before and
// after a key rotation), the tokens a gateway must refuse (expired, wrong audience or issuer,
// not yet valid, `alg: none`, HS256 signed with the RSA public key as its secret, a forged
// payload), Auth.js session cookies made by `@auth/core`'s own `encode()`, and a Standard
// Webhooks delivery signed by `svix`. Prints one JSON object.
//
// Env: QM_ISSUER (the `iss`), QM_TENANT (the `org_id` claim), QM_AUTH_SECRET.
import * as jose from 'jose';
import { encode } from '@auth/core/jwt';
import { Webhook } from 'svix';
import { randomBytes } from 'node:crypto';

const iss = process.env.QM_ISSUER;
const tenant = process.env.QM_TENANT;
const aud = 'qm-app';
const now = Math.floor(Date.now() / 1000);

async function keyPair(alg, kid, options = {}) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, ...options });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, publicKey, privateKey, jwk };
}

const rsa1 = await keyPair('RS256', 'rsa1');
const ec = await keyPair('ES256', 'ec1');
const ed = await keyPair('EdDSA', 'ed1', { crv: 'Ed25519' });
const rsa2 = await keyPair('RS256', 'rsa2');

async function sign(key, claims, header = {}) {
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
    .sign(key.privateKey);
}

const base = (sub, extra = {}) => ({ iss, aud, sub, org_id: tenant, iat: now, exp: now + 600, ...extra });

const rs256 = await sign(rsa1, base('user_rs', { roles: ['org:admin'], email: 'Ada.RS@Example.com', sid: 'sess_rs_1' }));
const [h, , s] = rs256.split('.');
const forgedPayload = jose.base64url.encode(JSON.stringify(base('user_rs', { org_id: 'someone-else', roles: ['org:admin'] })));
const spki = await jose.exportSPKI(rsa1.publicKey);

const tokens = {
  rs256,
  es256: await sign(ec, base('user_es', { roles: ['org:member'] })),
  eddsa: await sign(ed, base('user_ed')),
  expired: await sign(rsa1, base('user_rs', { iat: now - 7200, exp: now - 3600 })),
  wrong_audience: await sign(rsa1, base('user_rs', { aud: 'another-app' })),
  wrong_issuer: await sign(rsa1, base('user_rs', { iss: 'https://evil.example' })),
  not_yet_valid: await sign(rsa1, base('user_rs', { nbf: now + 3600 })),
  unknown_tenant: await sign(rsa1, base('user_rs', { org_id: 'no-such-org' })),
  rotated: await sign(rsa2, base('user_new')),
  none: new jose.UnsecuredJWT(base('user_rs')).encode(),
  hs256_confusion: await new jose.SignJWT(base('user_rs'))
    .setProtectedHeader({ alg: 'HS256', kid: 'rsa1', typ: 'JWT' })
    .sign(new TextEncoder().encode(spki)),
  forged: `${h}.${forgedPayload}.${s}`,
};

const secret = process.env.QM_AUTH_SECRET;
const salt = 'authjs.session-token';
const authjs = {
  valid: await encode({ token: { sub: 'authjs_user', name: 'Ada', email: 'ada@example.com' }, secret, salt, maxAge: 3600 }),
  expired: await encode({ token: { sub: 'authjs_user' }, secret, salt, maxAge: -60 }),
  other_secret: await encode({ token: { sub: 'authjs_user' }, secret: 'not-the-secret-at-all-0123456789', salt, maxAge: 3600 }),
  secure: await encode({ token: { sub: 'authjs_secure' }, secret, salt: '__Secure-authjs.session-token', maxAge: 3600 }),
};

const whSecret = `whsec_${randomBytes(24).toString('base64')}`;
const wh = new Webhook(whSecret);
const payload = JSON.stringify({ type: 'user.deleted', object: 'event', data: { id: 'user_webhook', deleted: true, object: 'user' } });
const msgId = `msg_${randomBytes(8).toString('hex')}`;
const at = new Date();
const webhook = {
  secret: whSecret,
  id: msgId,
  timestamp: Math.floor(at.getTime() / 1000),
  signature: wh.sign(msgId, at, payload),
  payload,
};

process.stdout.write(JSON.stringify({
  jwks_v1: { keys: [rsa1.jwk, ec.jwk, ed.jwk] },
  jwks_v2: { keys: [rsa1.jwk, ec.jwk, ed.jwk, rsa2.jwk] },
  tokens,
  authjs,
  webhook,
}));
