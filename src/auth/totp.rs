//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, 30-second steps,
//! six digits, the parameters every authenticator app reads from an `otpauth://` URI.

use ring::hmac;

pub const STEP_SECS: u64 = 30;
const DIGITS: u32 = 6;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A new random secret (160 bits, RFC 4226's recommended length), in base32.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    base32(&bytes)
}

/// The `otpauth://` URI an authenticator app enrols from (shown as a QR code).
pub fn uri(issuer: &str, account: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer).replace('+', "%20"),
        enc(account).replace('+', "%20"),
        enc(issuer).replace('+', "%20"),
    )
}

/// The code of a 30 s step.
pub fn code(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    bin % 10u32.pow(DIGITS)
}

/// The step of `code` if it is the code of the step at `now_secs` or of one step either
/// side (clock drift), compared in constant time; `None` otherwise.
pub fn verify(secret_b32: &str, code_text: &str, now_secs: u64) -> Option<u64> {
    let secret = unbase32(secret_b32)?;
    let code_text = code_text.trim();
    if code_text.len() != DIGITS as usize || !code_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now_secs / STEP_SECS;
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        let expected = format!("{:06}", code(&secret, step));
        // Every byte compared, whatever differs first.
        let diff = expected
            .bytes()
            .zip(code_text.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Base32 (case-insensitive, padding and spaces ignored); `None` for another character.
pub fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B (SHA-1 rows), read as six-digit codes.
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, expected) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
        ] {
            assert_eq!(code(secret, t / STEP_SECS), expected % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn base32_round_trips_and_verify_allows_one_step_of_drift() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(unbase32("mzxw6ytboi======").unwrap(), b"foobar");
        assert!(unbase32("not base32!").is_none());
        let secret = new_secret();
        let raw = unbase32(&secret).unwrap();
        assert_eq!(raw.len(), 20);
        let now = 1_700_000_000u64;
        let c = format!("{:06}", code(&raw, now / STEP_SECS));
        assert_eq!(verify(&secret, &c, now), Some(now / STEP_SECS));
        assert_eq!(verify(&secret, &c, now + STEP_SECS), Some(now / STEP_SECS));
        assert_eq!(verify(&secret, &c, now + 3 * STEP_SECS), None);
        assert_eq!(verify(&secret, "12345", now), None);
        assert_eq!(verify(&secret, "abcdef", now), None);
        let u = uri("Quartermaster", "operator:ops one", &secret);
        assert!(u.starts_with("otpauth://totp/Quartermaster:operator%3Aops%20one?secret="));
        assert!(u.ends_with("&issuer=Quartermaster&algorithm=SHA1&digits=6&period=30"));
    }
}
