//! Whom the gateway trusts as the appliance over TLS: `upstream.ca_file` (CAs, or the appliance's
//! own certificate), `upstream.pin_sha256`, the public roots; and refusals that say how to fix them.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::pin::Pin;
use crate::settings::UpstreamSettings;

/// How every certificate refusal starts, so its text can be told from other connect errors.
const REFUSED: &str = "the appliance's TLS certificate is refused";

impl Pin {
    /// The public-key pin of a DER certificate (of the whole DER if it cannot be read).
    pub fn of_certificate(der: &[u8]) -> Self {
        Pin::of(facts(der).map_or(der, |f| f.spki))
    }
}

/// The TLS client configuration for the appliance (verification on; see [`ApplianceVerifier`]).
pub fn client_config(settings: &UpstreamSettings) -> Result<rustls::ClientConfig, String> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let explicit = settings
        .ca_file
        .as_ref()
        .map_or_else(Vec::new, |ca| ca.certificates.clone());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.add_parsable_certificates(explicit.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("upstream.ca_file: {e}"))?;
    let verifier = ApplianceVerifier {
        explicit,
        pins: settings.pin_sha256.clone(),
        webpki,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// For `check-config`: one request to the appliance's base URL (unsigned; its answer does not
/// matter), to see whether its certificate is trusted. The pin of a trusted one, the refusal of
/// an untrusted one; `None` for an `http` URL. Not reaching the appliance is only a warning.
pub async fn check(settings: &UpstreamSettings) -> Result<Option<String>, String> {
    if !settings.url.is_https() {
        return Ok(None);
    }
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_millis(
            settings.connect_timeout_ms.get(),
        ))
        .timeout(std::time::Duration::from_millis(
            settings.probe_timeout_ms.get(),
        ))
        .tls_info(true);
    let builder = if settings.insecure_skip_verify {
        builder.danger_accept_invalid_certs(true)
    } else {
        builder.use_preconfigured_tls(client_config(settings)?)
    };
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    match client.get(settings.url.as_str()).send().await {
        Ok(response) => Ok(Some(
            match response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
            {
                Some(der) => format!(
                    "TLS OK: the appliance's certificate is trusted; its pin is {}",
                    Pin::of_certificate(der)
                ),
                None => "TLS OK".into(),
            },
        )),
        Err(e) => match refusal(&e) {
            Some(refused) => Err(refused),
            None => {
                let chain =
                    std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                        e.source()
                    });
                let text = chain.map(ToString::to_string).collect::<Vec<_>>();
                Ok(Some(format!(
                    "warning: TLS not checked, the appliance did not answer: {}",
                    text.join(": ")
                )))
            }
        },
    }
}

/// The certificate refusal inside a connect error, in plain words, if that is what it is.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
            && let Some(refused) = other.0.downcast_ref::<Refusal>()
        {
            return Some(refused.to_string());
        }
        // An io::Error hides what it wraps from `source()` (and hyper wraps one in another).
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    None
}

/// Trusts, in this order: when pins are set, a certificate matching one of them, and nothing
/// else; a certificate byte-equal to one in `ca_file`, whatever the host name (trusted
/// explicitly); a chain that verifies against the `ca_file` and public roots, for the host name.
/// Validity periods are checked in every case; handshake signatures with the provider's
/// algorithms.
#[derive(Debug)]
struct ApplianceVerifier {
    explicit: Vec<CertificateDer<'static>>,
    pins: Vec<Pin>,
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ApplianceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let der = end_entity.as_ref();
        let facts = facts(der);
        let verdict = if !self.pins.is_empty() {
            let pinned = [Some(Pin::of(der)), facts.as_ref().map(|f| Pin::of(f.spki))]
                .into_iter()
                .flatten()
                .any(|pin| self.pins.contains(&pin));
            if pinned {
                in_validity(facts.as_ref(), now)
            } else {
                Err(Reason::PinMismatch)
            }
        } else if self.explicit.iter().any(|c| c.as_ref() == der) {
            in_validity(facts.as_ref(), now)
        } else {
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| Reason::from_rustls(e, server_name))
        };
        verdict
            .map(|()| ServerCertVerified::assertion())
            .map_err(|reason| {
                let refusal = Refusal {
                    reason,
                    pin: Pin::of_certificate(der),
                };
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    refusal,
                ))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn in_validity(facts: Option<&CertFacts<'_>>, now: UnixTime) -> Result<(), Reason> {
    let Some(f) = facts else {
        return Err(Reason::Other("its validity period cannot be read".into()));
    };
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < f.not_before {
        Err(Reason::NotYetValid(Some(f.not_before)))
    } else if now > f.not_after {
        Err(Reason::Expired(Some(f.not_after)))
    } else {
        Ok(())
    }
}

/// Why a certificate was refused.
#[derive(Debug)]
enum Reason {
    Expired(Option<i64>),
    NotYetValid(Option<i64>),
    WrongName {
        expected: String,
        presented: Vec<String>,
    },
    UnknownIssuer,
    CaAsServer,
    PinMismatch,
    BadSignature,
    Other(String),
}

impl Reason {
    fn from_rustls(error: rustls::Error, server_name: &ServerName<'_>) -> Self {
        use CertificateError as C;
        let rustls::Error::InvalidCertificate(error) = error else {
            return Reason::Other(error.to_string());
        };
        let secs = |t: UnixTime| i64::try_from(t.as_secs()).ok();
        match error {
            C::Expired => Reason::Expired(None),
            C::ExpiredContext { not_after, .. } => Reason::Expired(secs(not_after)),
            C::NotValidYet => Reason::NotYetValid(None),
            C::NotValidYetContext { not_before, .. } => Reason::NotYetValid(secs(not_before)),
            C::NotValidForName => Reason::WrongName {
                expected: server_name.to_str().into_owned(),
                presented: Vec::new(),
            },
            C::NotValidForNameContext {
                expected,
                presented,
            } => Reason::WrongName {
                expected: expected.to_str().into_owned(),
                presented,
            },
            C::UnknownIssuer => Reason::UnknownIssuer,
            C::BadSignature => Reason::BadSignature,
            C::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                Reason::CaAsServer
            }
            other => Reason::Other(format!("{other}")),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = |secs: &Option<i64>| {
            secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|d| format!(" ({})", d.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        };
        match self {
            Reason::Expired(at) => write!(f, "it has expired{}", date(at)),
            Reason::NotYetValid(at) => write!(f, "it is not valid yet{}", date(at)),
            Reason::WrongName {
                expected,
                presented,
            } if presented.is_empty() => {
                write!(f, "host name mismatch: it is not valid for {expected}")
            }
            Reason::WrongName {
                expected,
                presented,
            } => write!(
                f,
                "host name mismatch: it is not valid for {expected}, only for {}",
                presented.join(", ")
            ),
            Reason::UnknownIssuer => {
                f.write_str("unknown issuer: no CA in upstream.ca_file nor any public CA signed it")
            }
            Reason::CaAsServer => f.write_str(
                "it is a CA certificate (as `openssl req -x509` makes) served as the appliance's \
                 own, and upstream.ca_file does not hold this exact certificate",
            ),
            Reason::PinMismatch => f.write_str("pin mismatch: it matches no upstream.pin_sha256"),
            Reason::BadSignature => f.write_str("its signature does not verify"),
            Reason::Other(text) => f.write_str(text),
        }
    }
}

/// A refused certificate: why, its pin, and how to trust it.
struct Refusal {
    reason: Reason,
    pin: Pin,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal { reason, pin } = self;
        write!(
            f,
            "{REFUSED}: {reason}. The presented certificate's pin is {pin}; "
        )?;
        match reason {
            Reason::Expired(_) | Reason::NotYetValid(_) => {
                f.write_str("renew the appliance's certificate, or check this host's clock")
            }
            Reason::PinMismatch => write!(
                f,
                "if the appliance's certificate was replaced on purpose, set upstream.pin_sha256 = \"{pin}\""
            ),
            _ => write!(
                f,
                "to trust it, set upstream.pin_sha256 = \"{pin}\" or put the appliance's certificate in upstream.ca_file"
            ),
        }
    }
}

// rustls prints the errors of custom verifiers with `{:?}`: the same plain words.
impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Refusal {}

/// What the verifier reads from a certificate itself: its validity period (epoch seconds) and
/// its SubjectPublicKeyInfo (DER, with its header).
struct CertFacts<'a> {
    not_before: i64,
    not_after: i64,
    spki: &'a [u8],
}

/// Walks `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … }` (RFC 5280).
fn facts(der: &[u8]) -> Option<CertFacts<'_>> {
    let (cert, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(cert.contents, SEQUENCE)?;
    let mut rest = tbs.contents;
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.1; // version
    }
    for tag in [0x02, SEQUENCE, SEQUENCE] {
        rest = element(rest, tag)?.1; // serial, signature algorithm, issuer
    }
    let (validity, rest) = element(rest, SEQUENCE)?;
    let (_subject, rest) = element(rest, SEQUENCE)?;
    let (spki, _) = element(rest, SEQUENCE)?;
    let (not_before, times) = time(validity.contents)?;
    let (not_after, _) = time(times)?;
    Some(CertFacts {
        not_before,
        not_after,
        spki: spki.whole,
    })
}

const SEQUENCE: u8 = 0x30;

struct Element<'a> {
    whole: &'a [u8],
    contents: &'a [u8],
}

/// The DER element at the start of `input`, which must have `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0, |len, b| len << 8 | usize::from(*b))
    };
    if found != tag || rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, rest) = rest.split_at(len);
    let whole = &input[..header + len];
    Some((Element { whole, contents }, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as
/// epoch seconds, and what follows it.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, century) = match input.first()? {
        0x17 => {
            let (e, rest) = element(input, 0x17)?;
            let yy: i32 = std::str::from_utf8(e.contents.get(..2)?)
                .ok()?
                .parse()
                .ok()?;
            (
                &e.contents[2..],
                rest,
                Some(if yy >= 50 { 1900 + yy } else { 2000 + yy }),
            )
        }
        _ => {
            let (e, rest) = element(input, 0x18)?;
            (e.contents, rest, None)
        }
    };
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, text) = match century {
        Some(year) => (year, text),
        None => (text.get(..4)?.parse().ok()?, text.get(4..)?),
    };
    let field = |i: usize| text.get(i..i + 2)?.parse::<u32>().ok();
    if text.len() != 10 {
        return None;
    }
    let at = chrono::NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)?.and_hms_opt(
        field(4)?,
        field(6)?,
        field(8)?,
    )?;
    Some((at.and_utc().timestamp(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData as _;

    #[test]
    fn facts_are_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        let facts = facts(cert.der()).unwrap();
        assert_eq!(facts.not_before, 1_577_923_200);
        assert_eq!(facts.not_after, 2_561_500_800);
        assert_eq!(facts.spki, key.subject_public_key_info());
        assert_eq!(
            Pin::of_certificate(cert.der()),
            Pin::of(&key.subject_public_key_info())
        );
        assert!(super::facts(&cert.der()[..40]).is_none());
    }

    #[test]
    fn refusals_are_found_inside_nested_io_errors() {
        let refused = Refusal {
            reason: Reason::PinMismatch,
            pin: Pin::parse(&"01".repeat(32)).unwrap(),
        };
        let text = refused.to_string();
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(refused),
        )));
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(inner);
        assert_eq!(refusal(&outer), Some(text));
        assert_eq!(refusal(&std::io::Error::other("refused")), None);
    }

    #[test]
    fn refusals_name_the_reason_the_pin_and_the_fix() {
        let refusal = Refusal {
            reason: Reason::UnknownIssuer,
            pin: Pin::parse(&"0".repeat(64)).unwrap(),
        };
        let text = refusal.to_string();
        assert!(text.starts_with(REFUSED));
        assert!(text.contains("unknown issuer"), "{text}");
        assert!(
            text.contains(
                "upstream.pin_sha256 = \"sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\""
            ),
            "{text}"
        );
        assert!(text.contains("upstream.ca_file"), "{text}");
        assert_eq!(format!("{refusal:?}"), text);
    }
}
