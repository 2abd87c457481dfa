//! Callback authentication with VOD's `SignKey`: `Sign` = MD5(SignKey + T), `T` an expiry.

use std::fmt;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// A VOD callback key (`SignKey` of `ModifyEventConfig`). Its `Debug` output is redacted.
#[derive(Clone)]
pub struct SignKey(String);

impl SignKey {
    /// Wraps a key.
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The expected `Sign` for an expiry `t`: lowercase hex MD5 of the key followed by `t` in
    /// decimal.
    #[must_use]
    pub fn sign(&self, t: i64) -> String {
        let mut md5 = Md5::new();
        md5.update(self.0.as_bytes());
        md5.update(t.to_string().as_bytes());
        hex::encode(md5.finalize())
    }

    /// Verifies a callback's `Sign` and `T` at time `now` (Unix seconds), allowing `skew_secs`
    /// of clock difference past the expiry. `Sign` is compared without case, in constant time.
    ///
    /// # Errors
    ///
    /// [`Error::SignatureMismatch`] or [`Error::SignatureExpired`].
    pub fn verify(&self, sign: &str, t: i64, now: i64, skew_secs: i64) -> Result<()> {
        let expected = self.sign(t);
        let given = sign.trim().to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(Error::SignatureMismatch);
        }
        if now > t.saturating_add(skew_secs) {
            return Err(Error::SignatureExpired { expired_at: t, now });
        }
        Ok(())
    }
}

impl fmt::Debug for SignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_worked_example() {
        // vod-api.md §5.4: SignKey abcXYZ123, T 1767226200.
        let key = SignKey::new("abcXYZ123");
        assert_eq!(key.sign(1_767_226_200), "767e63fe68863688beb7f494e211ae4a");
        assert!(key
            .verify(
                "767E63FE68863688BEB7F494E211AE4A",
                1_767_226_200,
                1_767_226_000,
                0
            )
            .is_ok());
    }

    #[test]
    fn rejects_wrong_sign_and_expired() {
        let key = SignKey::new("abcXYZ123");
        assert!(matches!(
            key.verify("00", 1_767_226_200, 0, 0),
            Err(Error::SignatureMismatch)
        ));
        assert!(matches!(
            key.verify(&key.sign(100), 100, 200, 30),
            Err(Error::SignatureExpired {
                expired_at: 100,
                now: 200
            })
        ));
        assert!(
            key.verify(&key.sign(100), 100, 120, 30).is_ok(),
            "inside the skew allowance"
        );
        assert_eq!(format!("{key:?}"), "SignKey(<redacted>)");
    }
}
