//! Certificate pins, as `upstream.pin_sha256` spells them: the SHA-256 of a certificate (DER)
//! or of its public key. Read here so settings can check them without knowing TLS.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A SHA-256 pin, of a whole certificate (DER) or of its public key (SubjectPublicKeyInfo).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin([u8; 32]);

impl Pin {
    pub fn of(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut pin = [0; 32];
        pin.copy_from_slice(digest.as_ref());
        Pin(pin)
    }

    /// Reads `sha256//<base64>`, base64, or hex (colons allowed, as `openssl x509 -fingerprint`
    /// prints them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex_text = text.replace(':', "");
        let bytes = match text.strip_prefix("sha256//") {
            Some(b64) => STANDARD.decode(b64).ok(),
            None if hex_text.len() == 64 => hex::decode(&hex_text).ok(),
            None => STANDARD.decode(text).ok(),
        };
        bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Pin)
            .ok_or_else(|| {
                format!("{text:?} is not a SHA-256 pin (sha256//<base64>, base64 or 64 hex digits)")
            })
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256//{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses `upstream.pin_sha256`: pins separated by commas; empty means no pin.
pub fn parse_pins(text: &str) -> Result<Vec<Pin>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Pin::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn pins_are_read_in_every_form() {
        let pin = Pin::parse(HEX).unwrap();
        let b64 = STANDARD.encode(pin.0);
        assert_eq!(Pin::parse(&b64).unwrap(), pin);
        assert_eq!(Pin::parse(&format!("sha256//{b64}")).unwrap(), pin);
        assert_eq!(Pin::parse(&HEX.to_uppercase()).unwrap(), pin);
        let colons = HEX
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Pin::parse(&colons).unwrap(), pin);
        assert_eq!(pin.to_string(), format!("sha256//{b64}"));
    }

    #[test]
    fn pin_lists_are_comma_separated() {
        let pin = Pin::parse(HEX).unwrap();
        assert_eq!(parse_pins("").unwrap(), []);
        assert_eq!(parse_pins(" , ").unwrap(), []);
        assert_eq!(
            parse_pins(&format!("{HEX}, sha256//{}", STANDARD.encode([7; 32]))).unwrap(),
            [pin, Pin([7; 32])]
        );
    }

    #[test]
    fn bad_pins_are_refused() {
        for bad in [
            "abc",
            &HEX[..62],
            "sha256//not-base64!",
            &format!("sha256//{}", STANDARD.encode([1; 20])),
            "sha1//2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
        ] {
            let err = parse_pins(&format!("{HEX},{bad}")).unwrap_err();
            assert!(err.contains("not a SHA-256 pin"), "{bad}: {err}");
        }
    }
}
