//! TSIG keys in BIND's `key` statement syntax, as `tsig-keygen` writes them:
//!
//! ```text
//! key "hav-update" {
//!         algorithm hmac-sha256;
//!         secret "base64…";
//! };
//! ```

use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};

/// How far our clock and the server's may differ, in seconds (RFC 8945 recommends 300).
const FUDGE_SECONDS: u16 = 300;

/// Why a key file was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsigKeyError {
    #[error("no `key \"NAME\" {{ … }}` statement")]
    NoKeyStatement,
    #[error("key `{0}`: no `{1}` clause")]
    Missing(String, &'static str),
    #[error("key `{key}`: algorithm `{algorithm}` is not supported (use hmac-sha256/384/512)")]
    Algorithm { key: String, algorithm: String },
    #[error("key `{0}`: the secret is not valid base64")]
    Secret(String),
    #[error("key name `{0}` is not a valid DNS name")]
    Name(String),
}

/// Parses the first `key` statement of `text` into a signer.
pub fn parse_bind_key(text: &str) -> Result<TSigner, TsigKeyError> {
    let after = text
        .split_once("key")
        .map(|(_, rest)| rest)
        .ok_or(TsigKeyError::NoKeyStatement)?;
    let (head, body) = after.split_once('{').ok_or(TsigKeyError::NoKeyStatement)?;
    let key_name = head.trim().trim_matches('"').to_owned();
    if key_name.is_empty() {
        return Err(TsigKeyError::NoKeyStatement);
    }
    let body = body.split_once('}').map(|(b, _)| b).unwrap_or(body);
    let mut algorithm = None;
    let mut secret = None;
    for clause in body.split(';') {
        let mut words = clause.split_whitespace();
        match (words.next(), words.next()) {
            (Some("algorithm"), Some(value)) => algorithm = Some(value.trim_matches('"')),
            (Some("secret"), Some(value)) => secret = Some(value.trim_matches('"')),
            _ => {}
        }
    }
    let algorithm =
        algorithm.ok_or_else(|| TsigKeyError::Missing(key_name.clone(), "algorithm"))?;
    let secret = secret.ok_or_else(|| TsigKeyError::Missing(key_name.clone(), "secret"))?;
    let algorithm = match algorithm.to_ascii_lowercase().as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(TsigKeyError::Algorithm {
                key: key_name,
                algorithm: other.to_owned(),
            });
        }
    };
    let secret = decode_base64(secret).ok_or_else(|| TsigKeyError::Secret(key_name.clone()))?;
    let name = Name::from_ascii(&key_name).map_err(|_| TsigKeyError::Name(key_name.clone()))?;
    TSigner::new(secret, algorithm, name, FUDGE_SECONDS).map_err(|_| TsigKeyError::Algorithm {
        key: key_name,
        algorithm: "(unsupported by this build)".into(),
    })
}

/// Standard base64 (RFC 4648 section 4), padded or not; None on any other character.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::alphabet::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const SECRET: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    SECRET.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tsig_keygen_key() {
        let text = "key \"hav-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\";\n};\n";
        let signer = parse_bind_key(text).expect("valid key");
        assert_eq!(signer.key(), (0u8..32).collect::<Vec<_>>().as_slice());
        assert_eq!(signer.signer_name().to_ascii(), "hav-update.");
        assert_eq!(*signer.algorithm(), TsigAlgorithm::HmacSha256);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert_eq!(
            parse_bind_key("nothing here").err(),
            Some(TsigKeyError::NoKeyStatement)
        );
        let md5 = "key k { algorithm hmac-md5; secret \"AAAA\"; };";
        assert!(matches!(
            parse_bind_key(md5),
            Err(TsigKeyError::Algorithm { .. })
        ));
        let bad = "key k { algorithm hmac-sha256; secret \"A*AA\"; };";
        assert_eq!(
            parse_bind_key(bad).err(),
            Some(TsigKeyError::Secret("k".into()))
        );
        let none = "key k { algorithm hmac-sha256; };";
        assert_eq!(
            parse_bind_key(none).err(),
            Some(TsigKeyError::Missing("k".into(), "secret"))
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode_base64(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(decode_base64("Zg==="), None);
    }
}
