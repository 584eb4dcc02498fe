// Signs a webhook body as Sanity does, with its own library (@sanity/webhook): prints the
// `sanity-webhook-signature` header for QM_BODY with QM_SECRET at the current time
// (tests/it/cms.rs).
import { encodeSignatureHeader } from '@sanity/webhook'

const body = process.env.QM_BODY
const secret = process.env.QM_SECRET
const header = await encodeSignatureHeader(body, Date.now(), secret)
process.stdout.write(header)
