//! Who is asking: a client id (proven with its key when it has one), the client's address
//! (trusted-proxy rules applied), and so whose budget a request spends.

use std::collections::HashMap;
use std::net::IpAddr;

use http::HeaderName;
use http::header::AUTHORIZATION;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::settings::RateLimitSettings;

/// Whose quota a request spends: a client id, or an address. Stored in the request's
/// extensions (within [`Identity`]) for logging.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Id(Box<str>),
    Ip(IpAddr),
    Unknown,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Id(id) => write!(f, "id:{id}"),
            Caller::Ip(ip) => write!(f, "ip:{ip}"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
}

/// How far a client id is to be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// No client id: the address is the caller.
    Anonymous,
    /// An id that has no key configured: believed, as ids always were (it shares a budget,
    /// not a secret).
    Claimed,
    /// An id sent with its key.
    Proven,
    /// An id that has a key, sent without it (or with a wrong one): the caller is treated as
    /// anonymous, so nobody can spend that client's budget.
    Unproven(Box<str>),
}

/// Who is asking, as far as the gateway can tell.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Whose quota the request spends.
    pub caller: Caller,
    /// The client's address (from `X-Forwarded-For` only behind a trusted proxy).
    pub address: Option<IpAddr>,
    pub proof: Proof,
}

impl Identity {
    /// Whom a budget that ids must not escape (forced refreshes) is charged to: a proven id,
    /// else the address.
    pub fn principal(&self) -> Caller {
        match (&self.caller, &self.proof) {
            (Caller::Id(_), Proof::Proven) => self.caller.clone(),
            _ => self.address.map_or(Caller::Unknown, Caller::Ip),
        }
    }

    /// Whether the per-address ceiling applies: to everyone but proven ids.
    pub fn is_proven(&self) -> bool {
        self.proof == Proof::Proven
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.proof {
            Proof::Unproven(id) => write!(f, "{} (id:{id} without its key)", self.caller),
            _ => self.caller.fmt(f),
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What identifying a caller reads from a request: the HTTP layer answers for its own
/// request type, so this module needs no web framework.
pub trait Asking {
    /// The address of the connection's other end.
    fn peer(&self) -> Option<IpAddr>;
    /// The first value of header `name`, when it is text.
    fn header(&self, name: &HeaderName) -> Option<&str>;
    /// Every value of header `name` that is text, in order.
    fn each_header(&self, name: &HeaderName, each: &mut dyn FnMut(&str));
}

/// Reads who is asking from a request.
pub struct Identifier {
    header: HeaderName,
    trusted: Vec<IpNet>,
    /// SHA-256 of each keyed client's key.
    keys: HashMap<Box<str>, [u8; 32]>,
}

impl Identifier {
    pub fn new(s: &RateLimitSettings) -> Self {
        Self {
            header: s.client_header.name().clone(),
            trusted: s.trusted_proxies.clone(),
            keys: s
                .clients
                .iter()
                .map(|(id, k)| (Box::from(id.as_str()), k.key_sha256.0))
                .collect(),
        }
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The ids that must be proven with a key (never the keys).
    pub fn keyed_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().map(|k| k.to_string()).collect();
        ids.sort();
        ids
    }

    pub fn identify<R: Asking + ?Sized>(&self, req: &R) -> Identity {
        let address = match req.peer() {
            Some(ip) if self.is_trusted(ip) => Some(self.forwarded_client(req).unwrap_or(ip)),
            peer => peer,
        };
        let anonymous = address.map_or(Caller::Unknown, Caller::Ip);
        let Some(id) = req
            .header(&self.header)
            .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        else {
            return Identity {
                caller: anonymous,
                address,
                proof: Proof::Anonymous,
            };
        };
        let (caller, proof) = match self.keys.get(id) {
            None => (Caller::Id(Box::from(id)), Proof::Claimed),
            Some(expected) if bearer(req).is_some_and(|key| key_matches(key, expected)) => {
                (Caller::Id(Box::from(id)), Proof::Proven)
            }
            Some(_) => (anonymous, Proof::Unproven(Box::from(id))),
        };
        Identity {
            caller,
            address,
            proof,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The rightmost address in `X-Forwarded-For` that is not a trusted proxy.
    fn forwarded_client<R: Asking + ?Sized>(&self, req: &R) -> Option<IpAddr> {
        let mut chain: Vec<IpAddr> = Vec::new();
        req.each_header(&X_FORWARDED_FOR, &mut |value| {
            chain.extend(
                value
                    .split(',')
                    .filter_map(|part| part.trim().parse::<IpAddr>().ok()),
            );
        });
        chain
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(chain.first())
            .copied()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer<R: Asking + ?Sized>(req: &R) -> Option<&str> {
    let value = req.header(&AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// SHA-256 of `text`.
pub fn sha256(text: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text).as_ref());
    out
}

/// Whether `presented` hashes to `expected`, compared in constant time.
pub fn key_matches(presented: &str, expected: &[u8; 32]) -> bool {
    sha256(presented.as_bytes()).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ClientKey, KeyDigest, Settings};
    use actix_web::test::TestRequest;

    fn identifier() -> Identifier {
        let mut s = Settings::defaults().rate_limit;
        s.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        s.clients.insert(
            "dash".into(),
            ClientKey {
                key_sha256: KeyDigest(sha256(b"s3cret")),
                appliances: None,
            },
        );
        Identifier::new(&s)
    }

    fn request(headers: &[(&str, &str)], peer: &str) -> actix_web::HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (k, v) in headers {
            r = r.insert_header((*k, *v));
        }
        r.to_http_request()
    }

    #[test]
    fn a_keyed_id_needs_its_key() {
        let ids = identifier();
        let proven = ids.identify(&request(
            &[("x-client-id", "dash"), ("authorization", "Bearer s3cret")],
            "192.0.2.1:1000",
        ));
        assert_eq!(proven.caller, Caller::Id("dash".into()));
        assert!(proven.is_proven());
        assert_eq!(proven.principal(), Caller::Id("dash".into()));

        for auth in [None, Some("Bearer wrong"), Some("Basic s3cret")] {
            let mut headers = vec![("x-client-id", "dash")];
            headers.extend(auth.map(|a| ("authorization", a)));
            let who = ids.identify(&request(&headers, "192.0.2.1:1000"));
            assert_eq!(
                who.caller,
                Caller::Ip("192.0.2.1".parse().unwrap()),
                "{auth:?}"
            );
            assert_eq!(who.proof, Proof::Unproven("dash".into()));
            assert_eq!(who.to_string(), "ip:192.0.2.1 (id:dash without its key)");
        }
    }

    #[test]
    fn ids_without_keys_are_claimed_and_charged_to_the_address_where_it_matters() {
        let ids = identifier();
        let who = ids.identify(&request(&[("x-client-id", "anyone")], "192.0.2.1:1000"));
        assert_eq!(who.caller, Caller::Id("anyone".into()));
        assert_eq!(who.proof, Proof::Claimed);
        assert_eq!(who.principal(), Caller::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(who.to_string(), "id:anyone");
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let ids = identifier();
        let behind = ids.identify(&request(
            &[("x-forwarded-for", "1.2.3.4, 203.0.113.9")],
            "10.1.1.1:1000",
        ));
        assert_eq!(behind.address, Some("203.0.113.9".parse().unwrap()));
        let direct = ids.identify(&request(&[("x-forwarded-for", "1.2.3.4")], "192.0.2.7:1"));
        assert_eq!(direct.address, Some("192.0.2.7".parse().unwrap()));
    }
}
