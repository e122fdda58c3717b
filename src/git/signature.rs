//! Signature and token checks: small pure functions over the raw body, in constant time.
//!
//! Every Git host (and Flux's `generic-hmac`) signs with an HMAC over the exact bytes it sent;
//! we verify those bytes before anything parses them. Tokens are compared through their
//! SHA-256 digests so neither content nor length leaks through timing.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use crate::config::SecretPair;

/// Why a delivery was not authenticated. Each maps to 401 with its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no secret is configured for this source; set {0} (or FLUXTRAIL_INSECURE_ALLOW_UNSIGNED=true for development)")]
    NotConfigured(&'static str),
    #[error("the request carries no {0}")]
    Missing(Credential),
    #[error("the {0} does not match any configured secret")]
    Mismatch(Credential),
}

/// What a source authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An HMAC of the body in a header.
    Signature,
    /// A shared token in a header (GitLab's `X-Gitlab-Token`, a bearer token).
    Token,
    /// HTTP Basic credentials (Azure DevOps service hooks).
    BasicAuth,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Signature => "signature",
            Credential::Token => "token",
            Credential::BasicAuth => "basic auth credentials",
        })
    }
}

/// The hash of an HMAC signature, as named by a header prefix (`sha256=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn from_prefix(p: &str) -> Option<Self> {
        match p.to_ascii_lowercase().as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Splits `sha256=<hex>` into its algorithm and digest bytes. `None` for anything else,
/// including an empty value (Gitea sends empty signature headers when no secret is set).
pub fn parse_prefixed(value: &str) -> Option<(Algorithm, Vec<u8>)> {
    let (prefix, hex_digest) = value.trim().split_once('=')?;
    let algo = Algorithm::from_prefix(prefix)?;
    Some((algo, decode_hex(hex_digest)?))
}

/// Decodes a bare hex digest; `None` if empty or not hex.
pub fn decode_hex(value: &str) -> Option<Vec<u8>> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    hex::decode(v).ok()
}

fn hmac_matches<M: Mac + hmac::digest::KeyInit>(key: &[u8], body: &[u8], expected: &[u8]) -> bool {
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// True when `expected` is the HMAC of `body` under `key` with `algo` (constant time).
pub fn hmac_verify(algo: Algorithm, key: &[u8], body: &[u8], expected: &[u8]) -> bool {
    match algo {
        Algorithm::Sha1 => hmac_matches::<Hmac<sha1::Sha1>>(key, body, expected),
        Algorithm::Sha256 => hmac_matches::<Hmac<Sha256>>(key, body, expected),
        Algorithm::Sha384 => hmac_matches::<Hmac<Sha384>>(key, body, expected),
        Algorithm::Sha512 => hmac_matches::<Hmac<Sha512>>(key, body, expected),
    }
}

/// Checks an HMAC against every configured secret (current, then previous).
pub fn verify_any(secrets: &SecretPair, algo: Algorithm, body: &[u8], expected: &[u8]) -> bool {
    // No short-circuit: both secrets are always tried, so timing does not tell which matched.
    secrets.iter().fold(false, |ok, s| {
        hmac_verify(algo, s.expose().as_bytes(), body, expected) | ok
    })
}

/// Constant-time equality of a presented token with any configured secret.
pub fn token_matches(secrets: &SecretPair, presented: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    secrets.iter().fold(false, |ok, s| {
        let want = Sha256::digest(s.expose().as_bytes());
        bool::from(want.ct_eq(&presented)) | ok
    })
}

/// Hex HMAC-SHA256 of `body`: what a sender puts in its signature header. Used by tests,
/// the example script and benchmarks to sign deliveries the way hosts do.
pub fn sign_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // GitHub's published vector ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SHA256: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const SHA1: &str = "01dc10d0c83e72ed246219cdd91669667fe2ca59";

    fn pair(s: &str) -> SecretPair {
        SecretPair::new(Some(s), None)
    }

    #[test]
    fn github_published_vector_verifies() {
        let (algo, digest) = parse_prefixed(&format!("sha256={SHA256}")).unwrap();
        assert_eq!(algo, Algorithm::Sha256);
        assert!(verify_any(&pair(SECRET), algo, BODY, &digest));
        assert_eq!(sign_sha256_hex(SECRET.as_bytes(), BODY), SHA256);
    }

    #[test]
    fn legacy_sha1_vector_verifies() {
        let (algo, digest) = parse_prefixed(&format!("sha1={SHA1}")).unwrap();
        assert!(verify_any(&pair(SECRET), algo, BODY, &digest));
    }

    #[test]
    fn trailing_newline_is_a_different_body() {
        let digest = decode_hex(SHA256).unwrap();
        assert!(!verify_any(
            &pair(SECRET),
            Algorithm::Sha256,
            b"Hello, World!\n",
            &digest
        ));
        assert!(sign_sha256_hex(SECRET.as_bytes(), b"Hello, World!\n").starts_with("8fde2e97"));
    }

    #[test]
    fn previous_secret_is_accepted_during_rotation() {
        let digest = decode_hex(SHA256).unwrap();
        let rotating = SecretPair::new(Some("brand new"), Some(SECRET));
        assert!(verify_any(&rotating, Algorithm::Sha256, BODY, &digest));
        assert!(!verify_any(
            &SecretPair::default(),
            Algorithm::Sha256,
            BODY,
            &digest
        ));
    }

    #[test]
    fn empty_or_odd_headers_are_not_signatures() {
        assert_eq!(parse_prefixed(""), None);
        assert_eq!(parse_prefixed("sha256="), None);
        assert_eq!(parse_prefixed("md5=abcd"), None);
        assert_eq!(parse_prefixed("sha256=zz"), None);
        assert_eq!(decode_hex("  "), None);
    }

    #[test]
    fn other_hash_lengths_verify() {
        use hmac::digest::KeyInit;
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(BODY);
        let sig = format!("sha512={}", hex::encode(mac.finalize().into_bytes()));
        let (algo, digest) = parse_prefixed(&sig).unwrap();
        assert!(verify_any(&pair("k"), algo, BODY, &digest));
        assert!(!verify_any(&pair("k"), Algorithm::Sha384, BODY, &digest));
    }

    #[test]
    fn tokens_compare_exactly() {
        let p = SecretPair::new(Some("tok"), Some("old"));
        assert!(token_matches(&p, "tok"));
        assert!(token_matches(&p, "old"));
        assert!(!token_matches(&p, "to"));
        assert!(!token_matches(&p, "tok "));
        assert!(!token_matches(&SecretPair::default(), ""));
    }

    proptest! {
        #[test]
        fn any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..512), idx in any::<usize>(), bit in 0u8..8) {
            let sig = decode_hex(&sign_sha256_hex(SECRET.as_bytes(), &body)).unwrap();
            prop_assert!(verify_any(&pair(SECRET), Algorithm::Sha256, &body, &sig));
            let mut tampered = body.clone();
            let i = idx % tampered.len();
            tampered[i] ^= 1 << bit;
            prop_assert!(!verify_any(&pair(SECRET), Algorithm::Sha256, &tampered, &sig));
        }

        #[test]
        fn any_truncation_fails(body in proptest::collection::vec(any::<u8>(), 1..512), cut in any::<usize>()) {
            let sig = decode_hex(&sign_sha256_hex(SECRET.as_bytes(), &body)).unwrap();
            let keep = cut % body.len();
            prop_assert!(!verify_any(&pair(SECRET), Algorithm::Sha256, &body[..keep], &sig));
        }

        #[test]
        fn any_flipped_signature_byte_fails(body in proptest::collection::vec(any::<u8>(), 0..256), idx in 0usize..32, bit in 0u8..8) {
            let mut sig = decode_hex(&sign_sha256_hex(SECRET.as_bytes(), &body)).unwrap();
            sig[idx] ^= 1 << bit;
            prop_assert!(!verify_any(&pair(SECRET), Algorithm::Sha256, &body, &sig));
        }
    }
}
