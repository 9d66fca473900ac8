//! `X-Hub-Signature-256`: the HMAC-SHA256 of the raw request body, keyed with the app secret.
//!
//! The check runs on the exact bytes received, before any parsing, and compares in constant
//! time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header prefix Meta puts before the hex digest.
pub const PREFIX: &str = "sha256=";

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request has no `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("X-Hub-Signature-256 is not sha256=<64 hex digits>")]
    Malformed,
    /// The digest does not match the body.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// Returns the reason as a bounded metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

/// Checks `header` (the `X-Hub-Signature-256` value) against `body` with the app secret.
///
/// # Errors
/// Returns which way the signature is wrong; the caller answers 401 and stores nothing.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(PREFIX.as_bytes())
        .ok_or(SignatureError::Malformed)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

/// Computes the `X-Hub-Signature-256` header value Meta would send for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty digest would simply
    // never verify.
    let digest = HmacSha256::new_from_slice(secret)
        .map(|mut mac| {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default();
    format!("{PREFIX}{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector_verifies() {
        // printf '{"a":1}' | openssl dgst -sha256 -hmac secret
        let header = "sha256=aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494";
        assert_eq!(sign(b"secret", br#"{"a":1}"#), header);
        assert_eq!(
            verify(b"secret", br#"{"a":1}"#, Some(header.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn each_way_of_being_wrong_has_its_own_reason() {
        let body = b"{}";
        assert_eq!(verify(b"k", body, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"k", body, Some(b"md5=00")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", body, Some(b"sha256=zz")),
            Err(SignatureError::Malformed)
        );
        let other = sign(b"other", body);
        assert_eq!(
            verify(b"k", body, Some(other.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let upper = sign(b"k", body).replace("sha256=", "").to_uppercase();
        assert_eq!(
            verify(b"k", body, Some(format!("sha256={upper}").as_bytes())),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn a_signature_verifies_its_own_body_and_secret(
            secret in proptest::collection::vec(any::<u8>(), 0..80),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let header = sign(&secret, &body);
            prop_assert_eq!(verify(&secret, &body, Some(header.as_bytes())), Ok(()));
        }

        #[test]
        fn any_changed_body_byte_is_refused(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let header = sign(&secret, &body);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= flip;
            prop_assert_eq!(verify(&secret, &tampered, Some(header.as_bytes())), Err(SignatureError::Mismatch));
        }

        #[test]
        fn a_different_secret_is_refused(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            other in proptest::collection::vec(any::<u8>(), 1..64),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assume!(secret != other);
            let header = sign(&other, &body);
            prop_assert_eq!(verify(&secret, &body, Some(header.as_bytes())), Err(SignatureError::Mismatch));
        }

        #[test]
        fn arbitrary_headers_never_panic_and_never_pass(
            header in proptest::collection::vec(any::<u8>(), 0..100),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let genuine = sign(b"k", &body);
            prop_assume!(header != genuine.as_bytes());
            prop_assert!(verify(b"k", &body, Some(&header)).is_err());
        }
    }
}
