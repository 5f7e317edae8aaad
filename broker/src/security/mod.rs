//! Who a client is and how its bytes are protected: TLS for listeners ([`tls`]), SASL
//! authentication ([`sasl`], [`scram`]), principals ([`principal`]) and what a connection
//! knows of its client ([`session`]).
//!
//! Pure decisions (SCRAM proofs, the SASL state machine, principal mapping) live here with no
//! I/O; the listener ([`crate::server`]) drives them.

pub mod principal;
pub mod sasl;
pub mod scram;
pub mod session;
pub mod tls;
