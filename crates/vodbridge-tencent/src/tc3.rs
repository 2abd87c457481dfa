//! TC3-HMAC-SHA256, the request signature of Tencent Cloud API 3.0 (vod-api.md §6).

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::{macros::format_description, OffsetDateTime};

use crate::error::{Error, Result};

/// The algorithm name in `Authorization` and the string to sign.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// API credentials. `Debug` shows the SecretId only.
#[derive(Clone)]
pub struct Credentials {
    /// SecretId (`AKID…`).
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: SecretString,
    /// Session token of temporary (STS) credentials, sent as `X-TC-Token`.
    pub token: Option<SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a signature covers.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// The query string (GET form), empty for POST.
    pub query: &'a str,
    /// Signed headers as sent (any case, any order); at least `content-type` and `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes.
    pub payload: &'a [u8],
    /// The service name in the credential scope (`vod`).
    pub service: &'a str,
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: i64,
}

/// Every intermediate value of one signature, for tests and for the emulator's error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Step 1.
    pub canonical_request: String,
    /// `content-type;host;…`.
    pub signed_headers: String,
    /// `Date/service/tc3_request`.
    pub credential_scope: String,
    /// Step 2.
    pub string_to_sign: String,
    /// Lowercase hex signature.
    pub signature: String,
}

impl SignRequest<'_> {
    /// Step 1: `(CanonicalRequest, SignedHeaders)`. Header names and values are lowercased and
    /// trimmed, sorted by name.
    #[must_use]
    pub fn canonical_request(&self) -> (String, String) {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical = format!(
            "{}\n/\n{}\n{}\n{}\n{}",
            self.method,
            self.query,
            canonical_headers,
            signed_headers,
            sha256_hex(self.payload)
        );
        (canonical, signed_headers)
    }

    /// Steps 1–4 with a SecretKey.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTimestamp`] for a timestamp outside the calendar.
    pub fn sign(&self, secret_key: &str) -> Result<Signature> {
        let date = utc_date(self.timestamp)?;
        let secret_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
        self.sign_with_secret_date(&secret_date)
    }

    /// Steps 1–4 from `SecretDate` (the official vector C publishes it, not the key).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTimestamp`] for a timestamp outside the calendar.
    pub fn sign_with_secret_date(&self, secret_date: &[u8]) -> Result<Signature> {
        let date = utc_date(self.timestamp)?;
        let (canonical_request, signed_headers) = self.canonical_request();
        let credential_scope = format!("{date}/{}/tc3_request", self.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{credential_scope}\n{}",
            self.timestamp,
            sha256_hex(canonical_request.as_bytes())
        );
        let secret_service = hmac(secret_date, self.service.as_bytes());
        let secret_signing = hmac(&secret_service, b"tc3_request");
        let signature = hex::encode(hmac(&secret_signing, string_to_sign.as_bytes()));
        Ok(Signature {
            canonical_request,
            signed_headers,
            credential_scope,
            string_to_sign,
            signature,
        })
    }
}

impl Signature {
    /// The `Authorization` header value.
    #[must_use]
    pub fn authorization(&self, secret_id: &str) -> String {
        format!(
            "{ALGORITHM} Credential={secret_id}/{}, SignedHeaders={}, Signature={}",
            self.credential_scope, self.signed_headers, self.signature
        )
    }
}

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// SecretId.
    pub secret_id: String,
    /// `YYYY-MM-DD` of the scope.
    pub date: String,
    /// Service of the scope.
    pub service: String,
    /// Lowercase header names.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=a;b, Signature=hex`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthorization`] naming what is malformed.
    pub fn parse(header: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidAuthorization(why.to_owned());
        let rest = header
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| bad("algorithm is not TC3-HMAC-SHA256"))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("expected key=value parts"))?;
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed = Some(value),
                "Signature" => signature = Some(value),
                _ => return Err(bad("unknown part")),
            }
        }
        let credential = credential.ok_or_else(|| bad("no Credential"))?;
        let mut scope = credential.split('/');
        let (Some(secret_id), Some(date), Some(service), Some("tc3_request"), None) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(bad("Credential is not SecretId/Date/service/tc3_request"));
        };
        Ok(Self {
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            service: service.to_owned(),
            signed_headers: signed
                .ok_or_else(|| bad("no SignedHeaders"))?
                .split(';')
                .map(str::to_owned)
                .collect(),
            signature: signature.ok_or_else(|| bad("no Signature"))?.to_owned(),
        })
    }
}

/// The UTC date `YYYY-MM-DD` of a Unix timestamp (local time breaks signatures near midnight).
///
/// # Errors
///
/// [`Error::InvalidTimestamp`] outside the calendar.
pub fn utc_date(timestamp: i64) -> Result<String> {
    OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]")).ok())
        .ok_or(Error::InvalidTimestamp)
}

/// Lowercase hex SHA-256.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

impl Credentials {
    /// Credentials from a SecretId and SecretKey.
    #[must_use]
    pub fn new(secret_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            secret_id: secret_id.into(),
            secret_key: SecretString::from(secret_key.into()),
            token: None,
        }
    }

    /// Signs a request and returns the `Authorization` value.
    ///
    /// # Errors
    ///
    /// As [`SignRequest::sign`].
    pub fn authorize(&self, request: &SignRequest<'_>) -> Result<String> {
        Ok(request
            .sign(self.secret_key.expose_secret())?
            .authorization(&self.secret_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const CVM_PAYLOAD: &[u8] = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    const JSON: &str = "application/json; charset=utf-8";

    fn cvm<'a>(headers: &'a [(&'a str, &'a str)]) -> SignRequest<'a> {
        SignRequest {
            method: "POST",
            query: "",
            headers,
            payload: CVM_PAYLOAD,
            service: "cvm",
            timestamp: 1_551_113_065,
        }
    }

    #[test]
    fn official_vector_a() {
        assert_eq!(
            sha256_hex(CVM_PAYLOAD),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let headers = [("Content-Type", JSON), ("Host", "cvm.tencentcloudapi.com")];
        let sig = cvm(&headers).sign(KEY).expect("signs");
        assert_eq!(
            sig.canonical_request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\ncontent-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            sha256_hex(sig.canonical_request.as_bytes()),
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            sig.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            sig.authorization("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn official_vector_b_get() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "cvm.tencentcloudapi.com"),
        ];
        let request = SignRequest {
            method: "GET",
            query: "Limit=10&Offset=0",
            headers: &headers,
            payload: b"",
            service: "cvm",
            timestamp: 1_539_084_154,
        };
        let sig = request.sign(KEY).expect("signs");
        assert_eq!(
            sha256_hex(sig.canonical_request.as_bytes()),
            "91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7"
        );
        assert_eq!(
            sig.signature,
            "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474"
        );
    }

    #[test]
    fn official_vector_c_from_secret_date() {
        let headers = [
            ("Content-Type", JSON),
            ("Host", "cvm.tencentcloudapi.com"),
            ("X-TC-Action", "DescribeInstances"),
        ];
        let secret_date =
            hex::decode("da98fb70dcf6b112dc21038d1eeeb3a95c74b4dcb12c1131f864f6066bd02be0")
                .expect("hex");
        let sig = cvm(&headers)
            .sign_with_secret_date(&secret_date)
            .expect("signs");
        assert_eq!(
            sha256_hex(sig.canonical_request.as_bytes()),
            "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
        assert_eq!(
            sig.string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
        assert_eq!(
            sig.signature,
            "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
        );
        // With the EXAMPLE key and the same headers (self-computed in vod-api.md §6.3).
        assert_eq!(
            cvm(&headers).sign(KEY).expect("signs").signature,
            "644be983de9a8a3f00db8eadaba61467c3b429e2215758ba897b738ca469fd26"
        );
    }

    #[test]
    fn vod_vectors_d() {
        let vod = |payload: &'static [u8], headers: &'static [(&'static str, &'static str)]| {
            SignRequest {
                method: "POST",
                query: "",
                headers,
                payload,
                service: "vod",
                timestamp: 1_551_113_065,
            }
        };
        const H: &[(&str, &str)] = &[("Content-Type", JSON), ("Host", "vod.tencentcloudapi.com")];
        let cases: [(&[u8], &str, &str, &str); 3] = [
            (
                b"{}",
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "7aac441261bf5d7cc57a034d23fa2915c11afd2ea4c7caf841555b613712e810",
                "1380c31fb07a8e99580795600a0e306091c40e01facf95b9641bf1852cd7b285",
            ),
            (
                br#"{"SubAppId":1500000001}"#,
                "4141dce86ef56e1977a5c49444e0192c00e9eb4ee2d78edc738a8e2bab02fbe8",
                "ee3d0bacbc9a593daa28c9c042060984ff4b709e5ce14e8d092d75a55f830726",
                "37b4bdf0275d6c511a68b91db658f6511c7fe0286ecaf134ffeb66908747338b",
            ),
            (
                br#"{"EventHandles":["EventHandle1","EventHandle2"]}"#,
                "e8914fe434d44532708b0e2bb6bd7ea95f70796b4dc384afe453a3d7eb362d0a",
                "d0c430645fdc0c5d40e364ad9b74622418a022753aaa6bbc91efd5bc68aec2fc",
                "d985c94d4c9566edf586b88c57ee819e47eec00318f130d18959e3c581b4fb2f",
            ),
        ];
        for (payload, payload_hash, canonical_hash, signature) in cases {
            assert_eq!(sha256_hex(payload), payload_hash);
            let sig = vod(payload, H).sign(KEY).expect("signs");
            assert_eq!(sha256_hex(sig.canonical_request.as_bytes()), canonical_hash);
            assert_eq!(sig.signature, signature);
        }
        const WITH_ACTION: &[(&str, &str)] = &[
            ("Content-Type", JSON),
            ("Host", "vod.tencentcloudapi.com"),
            ("X-TC-Action", "PullEvents"),
        ];
        assert_eq!(
            vod(b"{}", WITH_ACTION).sign(KEY).expect("signs").signature,
            "ac0b01f6d6ffa6bcb0b819035d2414234a0eb0b18041ca6c802f565f537945c8"
        );
        const GO_SDK: &[(&str, &str)] = &[
            ("Content-Type", "application/json"),
            ("Host", "vod.tencentcloudapi.com"),
        ];
        assert_eq!(
            vod(b"{}", GO_SDK).sign(KEY).expect("signs").signature,
            "0161a06c8bf56f03d47cafe6ca8375f6cdb9c8256d171627b9f7054e9708daa9"
        );
    }

    #[test]
    fn authorization_round_trips_and_rejects_garbage() {
        let header = "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/vod/tc3_request, SignedHeaders=content-type;host, Signature=1380c31fb07a8e99580795600a0e306091c40e01facf95b9641bf1852cd7b285";
        let auth = Authorization::parse(header).expect("parses");
        assert_eq!(auth.secret_id, "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE");
        assert_eq!(
            (auth.date.as_str(), auth.service.as_str()),
            ("2019-02-25", "vod")
        );
        assert_eq!(auth.signed_headers, ["content-type", "host"]);
        for bad in [
            "",
            "HMAC x",
            "TC3-HMAC-SHA256 Credential=a/b",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_date_is_utc() {
        // 2019-02-26 01:24:25 in UTC+8 is still the 25th in UTC.
        assert_eq!(utc_date(1_551_113_065).expect("date"), "2019-02-25");
        let creds = Credentials::new("AKID", "secret");
        assert!(!format!("{creds:?}").contains("secret\""), "{creds:?}");
    }
}
