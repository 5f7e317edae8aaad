//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server's side: credentials
//! derived from a salted password, and the two-round exchange that checks a client's proof
//! without the password ever crossing the wire or being stored.
//!
//! Pure: the caller supplies the stored credential and the server nonce.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds on a credential's PBKDF2 iterations (both mechanisms).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// A SCRAM hash.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// The SASL name (`SCRAM-SHA-256`).
    pub fn sasl_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name.
    pub fn from_sasl_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Kafka's wire code (`ScramMechanism`: 1 for SHA-256, 2 for SHA-512).
    pub fn code(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    /// The mechanism of a wire code.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            Self::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Self::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// What the broker keeps of a user's password: enough to check a proof, not enough to
/// produce one.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        Self {
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// The credential of a password.
    pub fn from_password(
        mechanism: Mechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let salted = mechanism.salted_password(password, &salt, iterations);
        Self::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// Whether `password` is the one this credential was made from (SASL/PLAIN checks this).
    pub fn matches_password(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        let again = Self::from_password(mechanism, password, self.salt.clone(), self.iterations);
        constant_time_eq(&again.stored_key, &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed. The client is told only that authentication failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the authorization id differs from the user name")]
    AuthorizationId,
    #[error("delegation tokens are not supported")]
    TokenAuth,
    #[error("the nonce does not continue the exchange")]
    Nonce,
    #[error("invalid credentials")]
    InvalidProof,
}

/// The client's first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub username: String,
    pub nonce: String,
    /// The message without its GS2 header (it is part of what both sides sign).
    bare: String,
    /// The GS2 header, echoed base64-encoded in the client's final message.
    gs2_header: String,
}

/// Reads the client's first message: `n,[a=AUTHZID],n=USER,r=NONCE[,ext=...]`.
///
/// # Errors
/// A malformed message, channel binding, an authorization id for another user, or a
/// delegation-token login.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let binding = parts.next().ok_or(ScramError::Malformed("empty"))?;
    let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no user"))?;
    match binding {
        "n" | "y" => {}
        b if b.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let mut fields = bare.split(',');
    let username = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or(ScramError::Malformed("expected n=USER"))
        .and_then(decode_saslname)?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(ScramError::Malformed("expected r=NONCE"))?;
    for extension in fields {
        if extension == "tokenauth=true" {
            return Err(ScramError::TokenAuth);
        }
    }
    if !authzid.is_empty() {
        let authzid = authzid
            .strip_prefix("a=")
            .ok_or(ScramError::Malformed("bad authorization id"))
            .and_then(decode_saslname)?;
        if authzid != username {
            return Err(ScramError::AuthorizationId);
        }
    }
    Ok(ClientFirst {
        username,
        nonce: nonce.to_string(),
        bare: bare.to_string(),
        gs2_header: format!("{binding},{authzid},"),
    })
}

/// `=2C` and `=3D` stand for `,` and `=` in SCRAM names; any other `=` is malformed.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

/// An exchange after the server's first message, waiting for the client's proof.
#[derive(Debug, Clone)]
pub struct AwaitingProof {
    mechanism: Mechanism,
    credential: ScramCredential,
    client_first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl AwaitingProof {
    /// The user being authenticated.
    pub fn username(&self) -> &str {
        &self.client_first.username
    }
}

/// Answers the client's first message for a user whose credential is `credential`: returns
/// the exchange state and the server's first message `r=NONCE,s=SALT,i=ITERATIONS`.
pub fn server_first(
    mechanism: Mechanism,
    client_first: ClientFirst,
    credential: ScramCredential,
    server_nonce: &str,
) -> (AwaitingProof, Vec<u8>) {
    let nonce = format!("{}{server_nonce}", client_first.nonce);
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&credential.salt),
        credential.iterations
    );
    let message = server_first.clone().into_bytes();
    (
        AwaitingProof {
            mechanism,
            credential,
            client_first,
            server_first,
            nonce,
        },
        message,
    )
}

/// Checks the client's final message `c=BINDING,r=NONCE,p=PROOF` and returns the server's
/// final message `v=SIGNATURE`.
///
/// # Errors
/// A malformed message, a nonce or channel binding that does not continue the exchange, or
/// a proof that does not match the credential.
pub fn verify_client_final(
    exchange: &AwaitingProof,
    message: &[u8],
) -> Result<Vec<u8>, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("expected p=PROOF"))?;
    let mut fields = without_proof.split(',');
    let binding = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or(ScramError::Malformed("expected c=BINDING"))?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(ScramError::Malformed("expected r=NONCE"))?;
    if B64.decode(binding).ok().as_deref() != Some(exchange.client_first.gs2_header.as_bytes()) {
        return Err(ScramError::ChannelBinding);
    }
    // Kafka's test (ScramSaslServer): the nonce must end with the server's part. Some
    // clients (librdkafka 2.0) send their own nonce twice, which Kafka accepts.
    let server_part = &exchange.nonce[exchange.client_first.nonce.len()..];
    if !nonce.ends_with(server_part) || !nonce.starts_with(&exchange.client_first.nonce) {
        return Err(ScramError::Nonce);
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("proof is not base64"))?;
    let auth_message = format!(
        "{},{},{}",
        exchange.client_first.bare, exchange.server_first, without_proof
    );
    let mechanism = exchange.mechanism;
    let credential = &exchange.credential;
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err(ScramError::InvalidProof);
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
        return Err(ScramError::InvalidProof);
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
}

/// A fresh server nonce: 32 random letters and digits (as Kafka's are alphanumeric: some
/// clients mis-read other printable characters).
pub fn new_nonce() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's side, as RFC 5802 describes it, to drive the server in tests.
    fn client_proof(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        final_without_proof: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let salt = B64.decode(&fields[1][2..]).expect("salt");
        let iterations: u32 = fields[2][2..].parse().expect("iterations");
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let auth = format!("{client_first_bare},{server_first},{final_without_proof}");
        let signature = mechanism.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected_v = mechanism.hmac(&server_key, auth.as_bytes());
        (B64.encode(proof), expected_v)
    }

    /// RFC 7677's SCRAM-SHA-256 example: user `user`, password `pencil`.
    #[test]
    fn the_rfc_7677_exchange_verifies_and_signs_as_published() {
        let mechanism = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential = ScramCredential::from_password(mechanism, b"pencil", salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
        assert_eq!(first.username, "user");
        let (exchange, server_first_msg) = server_first(
            mechanism,
            first,
            credential,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            server_first_msg,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = verify_client_final(
            &exchange,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .expect("valid proof");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_wrong_password_is_refused_and_a_right_one_accepted_for_both_hashes() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let credential =
                ScramCredential::from_password(mechanism, b"secret", b"salt!".to_vec(), 4096);
            for (password, ok) in [("secret", true), ("Secret", false), ("", false)] {
                let first = parse_client_first(b"n,,n=alice,r=abc").expect("first");
                let bare = "n=alice,r=abc".to_string();
                let (exchange, sf) = server_first(mechanism, first, credential.clone(), "xyz");
                let sf = String::from_utf8(sf).expect("utf8");
                let without = "c=biws,r=abcxyz";
                let (proof, expected_v) = client_proof(mechanism, password, &bare, &sf, without);
                let result =
                    verify_client_final(&exchange, format!("{without},p={proof}").as_bytes());
                if ok {
                    let v = result.expect("accepted");
                    assert_eq!(v, format!("v={}", B64.encode(expected_v)).into_bytes());
                } else {
                    assert_eq!(result, Err(ScramError::InvalidProof), "{password}");
                }
            }
            assert!(credential.matches_password(mechanism, b"secret"));
            assert!(!credential.matches_password(mechanism, b"secreT"));
        }
    }

    #[test]
    fn a_replayed_or_foreign_nonce_is_refused() {
        let mechanism = Mechanism::Sha512;
        let credential = ScramCredential::from_password(mechanism, b"pw", b"s".to_vec(), 4096);
        let first = parse_client_first(b"n,,n=bob,r=one").expect("first");
        let (exchange, _) = server_first(mechanism, first, credential, "two");
        for foreign in [
            &b"c=biws,r=onethree,p=AAAA"[..],
            b"c=biws,r=two,p=AAAA",
            b"c=biws,r=xtwo,p=AAAA",
        ] {
            assert_eq!(
                verify_client_final(&exchange, foreign),
                Err(ScramError::Nonce)
            );
        }
        assert_eq!(
            verify_client_final(&exchange, b"c=eSws,r=onetwo,p=AAAA"),
            Err(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn malformed_first_messages_are_errors_not_panics() {
        for message in [
            &b""[..],
            b"n",
            b"n,,",
            b"n,,n=",
            b"n,,n=a",
            b"n,,n=a,r=",
            b"x,,n=a,r=b",
            b"n,,n=a=2,r=b",
            b"n,,n=a=,r=b",
            b"\xff\xfe",
        ] {
            assert!(parse_client_first(message).is_err(), "{message:?}");
        }
        assert_eq!(
            parse_client_first(b"p=tls-unique,,n=a,r=b"),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            parse_client_first(b"n,a=root,n=a,r=b"),
            Err(ScramError::AuthorizationId)
        );
        assert_eq!(
            parse_client_first(b"n,,n=a,r=b,tokenauth=true"),
            Err(ScramError::TokenAuth)
        );
        let escaped = parse_client_first(b"n,a=x=2Cy,n=x=2Cy,r=b").expect("escaped");
        assert_eq!(escaped.username, "x,y");
    }

    #[test]
    fn random_final_messages_are_errors_not_panics() {
        use proptest::prelude::*;
        let credential =
            ScramCredential::from_password(Mechanism::Sha256, b"pw", b"s".to_vec(), 4096);
        let first = parse_client_first(b"n,,n=bob,r=one").expect("first");
        let (exchange, _) = server_first(Mechanism::Sha256, first, credential, "two");
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..200))| {
            let _ = verify_client_final(&exchange, &bytes);
            let _ = parse_client_first(&bytes);
        });
    }

    #[test]
    fn server_nonces_are_alphanumeric() {
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 32);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(nonce, new_nonce());
    }
}
