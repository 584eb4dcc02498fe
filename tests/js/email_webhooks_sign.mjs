// Signs email providers' delivery webhooks as they do (tests/it/comms.rs). Prints one JSON
// object of the headers to send with QM_BODY.
//
// - QM_PROVIDER=resend: Svix's own library (`svix`) with QM_SECRET (`whsec_...`).
// - QM_PROVIDER=sendgrid: an ECDSA P-256 signature over timestamp + body with the private
//   key QM_PKCS8 (base64 DER), checked with SendGrid's own verifier
//   (`@sendgrid/eventwebhook`) against QM_PUBLIC_KEY (the base64 key SendGrid shows) before
//   it is printed.
import { Webhook } from 'svix';
import { EventWebhook } from '@sendgrid/eventwebhook';
import { createPrivateKey, sign, randomBytes } from 'node:crypto';

const body = process.env.QM_BODY;
const provider = process.env.QM_PROVIDER;
const ts = process.env.QM_TIMESTAMP ? new Date(Number(process.env.QM_TIMESTAMP) * 1000) : new Date();
if (provider === 'resend') {
  const id = process.env.QM_ID || `msg_${randomBytes(8).toString('hex')}`;
  const signature = new Webhook(process.env.QM_SECRET).sign(id, ts, body);
  process.stdout.write(JSON.stringify({
    'svix-id': id,
    'svix-timestamp': String(Math.floor(ts.getTime() / 1000)),
    'svix-signature': signature,
  }));
} else if (provider === 'sendgrid') {
  const key = createPrivateKey({ key: Buffer.from(process.env.QM_PKCS8, 'base64'), format: 'der', type: 'pkcs8' });
  const timestamp = String(Math.floor(ts.getTime() / 1000));
  const signature = sign('sha256', Buffer.from(timestamp + body), key).toString('base64');
  const ew = new EventWebhook();
  const pem = `-----BEGIN PUBLIC KEY-----\n${process.env.QM_PUBLIC_KEY}\n-----END PUBLIC KEY-----`;
  if (!ew.verifySignature(ew.convertPublicKeyToECDSA(pem), body, signature, timestamp)) {
    throw new Error("SendGrid's own verifier refuses the signature");
  }
  process.stdout.write(JSON.stringify({
    'x-twilio-email-event-webhook-signature': signature,
    'x-twilio-email-event-webhook-timestamp': timestamp,
  }));
} else {
  throw new Error(`unknown provider ${provider}`);
}
