//! A SASL exchange must never panic, whatever tokens a client sends: the first byte picks
//! the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the rest is split at `0xff` bytes into
//! the tokens of successive SaslAuthenticate requests, which drive the connection's state
//! machine exactly as the broker does (a stored credential exists for user `alice`; the first
//! token may be a well-formed SCRAM first message so that the proof step is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokafka_broker::security::sasl::{SaslSession, TokenOutcome};
use tokafka_broker::security::scram::{Mechanism, ScramCredential};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let mechanism = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"][usize::from(choice % 3)];
    let enabled: Vec<String> = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let lookup = |user: &str, mechanism: Mechanism| {
        (user == "alice").then(|| {
            ScramCredential::from_salted_password(mechanism, b"salt".to_vec(), &[7u8; 64], 4096)
        })
    };
    let mut session = SaslSession::new();
    if session.handshake(mechanism, &enabled).is_err() {
        return;
    }
    for (i, token) in rest.split(|b| *b == 0xff).take(4).enumerate() {
        let mut token = token.to_vec();
        if i == 0 && choice & 0x80 != 0 {
            token = [b"n,,n=alice,r=".as_slice(), &token].concat();
        }
        match session.token(&token, &lookup, None, "servernonce") {
            TokenOutcome::Continue(_) => {}
            TokenOutcome::Authenticated { .. } => {
                let _ = session.handshake(mechanism, &enabled);
            }
            TokenOutcome::Failed(_) | TokenOutcome::IllegalState => return,
        }
    }
});
