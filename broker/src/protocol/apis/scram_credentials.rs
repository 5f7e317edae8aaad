//! DescribeUserScramCredentials and AlterUserScramCredentials: SCRAM credentials in the
//! replicated metadata, with Kafka's validation (one change per user per request, Kafka's
//! iteration bounds, deleting only what exists). Passwords never reach the broker: the
//! client sends a salted password, from which the stored and server keys are derived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::Refusal;
use crate::controller::metadata::Command;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::security::scram::{Mechanism, ScramCredential, MAX_ITERATIONS, MIN_ITERATIONS};

/// How long an alteration waits to be visible on this broker before it is answered.
const SEE_ALTERED_WITHIN: Duration = Duration::from_secs(5);

pub fn describe(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: DescribeUserScramCredentialsRequest = frame.decode()?;
    let metadata = broker.cluster.metadata();
    let info = |user: &str| -> Option<Vec<CredentialInfo>> {
        metadata.scram_credentials.get(user).map(|credentials| {
            credentials
                .iter()
                .map(|(mechanism, credential)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism.code())
                        .with_iterations(i32::try_from(credential.iterations).unwrap_or(i32::MAX))
                })
                .collect()
        })
    };
    let requested: Vec<String> = request
        .users
        .unwrap_or_default()
        .iter()
        .map(|u| u.name.to_string())
        .collect();
    let mut results = Vec::new();
    if requested.is_empty() {
        for user in metadata.scram_credentials.keys() {
            results.push(
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_credential_infos(info(user).unwrap_or_default()),
            );
        }
    } else {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for user in &requested {
            *counts.entry(user.as_str()).or_default() += 1;
        }
        for (user, count) in counts {
            let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
            results.push(if count > 1 {
                result
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                    ))))
            } else {
                match info(user) {
                    Some(infos) => result.with_credential_infos(infos),
                    None => result
                        .with_error_code(ResponseError::ResourceNotFound.code())
                        .with_error_message(Some(str_bytes(&format!(
                            "Attempt to describe a user credential that does not exist: {user}"
                        )))),
                }
            });
        }
    }
    let response = DescribeUserScramCredentialsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// One change a request asks for.
enum Change {
    Upsert(Mechanism, ScramCredential),
    Delete(Mechanism),
}

/// Checks an upsertion as Kafka does; `Ok` is the credential to store.
fn upsertion(
    mechanism: i8,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<(Mechanism, ScramCredential), Refusal> {
    let mechanism = Mechanism::from_code(mechanism).ok_or_else(|| {
        Refusal::new(
            ResponseError::UnsupportedSaslMechanism,
            format!("Unknown SCRAM mechanism {mechanism}"),
        )
    })?;
    let iterations = u32::try_from(iterations).unwrap_or(0);
    if iterations < MIN_ITERATIONS {
        return Err(Refusal::new(
            ResponseError::UnacceptableCredential,
            format!("Too few iterations: at least {MIN_ITERATIONS}"),
        ));
    }
    if iterations > MAX_ITERATIONS {
        return Err(Refusal::new(
            ResponseError::UnacceptableCredential,
            format!("Too many iterations: at most {MAX_ITERATIONS}"),
        ));
    }
    let hash_len = match mechanism {
        Mechanism::Sha256 => 32,
        Mechanism::Sha512 => 64,
    };
    if salt.is_empty() || salted_password.len() != hash_len {
        return Err(Refusal::new(
            ResponseError::UnacceptableCredential,
            "The salt must not be empty and the salted password must be one hash long",
        ));
    }
    let credential = ScramCredential::from_salted_password(
        mechanism,
        salt.to_vec(),
        salted_password,
        iterations,
    );
    Ok((mechanism, credential))
}

pub async fn alter(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: AlterUserScramCredentialsRequest = frame.decode()?;
    let mut names: Vec<&str> = request.deletions.iter().map(|d| d.name.as_str()).collect();
    names.extend(request.upsertions.iter().map(|u| u.name.as_str()));
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<&str> = names.iter().copied().filter(|n| !seen.insert(*n)).collect();
    let mut checked: Vec<(String, Result<Change, Refusal>)> = Vec::new();
    for deletion in &request.deletions {
        let change = Mechanism::from_code(deletion.mechanism)
            .map(Change::Delete)
            .ok_or_else(|| {
                Refusal::new(
                    ResponseError::UnsupportedSaslMechanism,
                    format!("Unknown SCRAM mechanism {}", deletion.mechanism),
                )
            });
        checked.push((deletion.name.to_string(), change));
    }
    for upsert in &request.upsertions {
        let change = upsertion(
            upsert.mechanism,
            upsert.iterations,
            &upsert.salt,
            &upsert.salted_password,
        )
        .map(|(m, c)| Change::Upsert(m, c));
        checked.push((upsert.name.to_string(), change));
    }
    let mut results = Vec::with_capacity(checked.len());
    let mut reported = BTreeSet::new();
    for (user, change) in checked {
        let outcome = if duplicated.contains(user.as_str()) {
            if !reported.insert(user.clone()) {
                continue;
            }
            Err(Refusal::new(
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            ))
        } else if user.is_empty() {
            Err(Refusal::new(
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            ))
        } else {
            match change {
                Err(refusal) => Err(refusal),
                Ok(change) => apply(broker, &user, change).await,
            }
        };
        let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(&user));
        results.push(match outcome {
            Ok(()) => result,
            Err(refusal) => result
                .with_error_code(refusal.code.code())
                .with_error_message(Some(str_bytes(&refusal.message))),
        });
    }
    let response = AlterUserScramCredentialsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// Writes one change to the quorum and waits until this broker sees it.
async fn apply(broker: &Arc<Broker>, user: &str, change: Change) -> Result<(), Refusal> {
    let cluster = &broker.cluster;
    match change {
        Change::Upsert(mechanism, credential) => {
            cluster
                .write(&Command::UpsertScramCredential {
                    user: user.to_string(),
                    mechanism,
                    credential: credential.clone(),
                })
                .await?;
            cluster
                .wait_for_metadata(SEE_ALTERED_WITHIN, |m| {
                    m.scram_credentials
                        .get(user)
                        .and_then(|c| c.get(&mechanism))
                        == Some(&credential)
                })
                .await;
        }
        Change::Delete(mechanism) => {
            cluster
                .write(&Command::DeleteScramCredential {
                    user: user.to_string(),
                    mechanism,
                })
                .await
                .map_err(|refusal| {
                    if refusal.code == ResponseError::ResourceNotFound {
                        Refusal::new(
                            ResponseError::ResourceNotFound,
                            "Attempt to delete a user credential that does not exist",
                        )
                    } else {
                        refusal
                    }
                })?;
            cluster
                .wait_for_metadata(SEE_ALTERED_WITHIN, |m| {
                    m.scram_credentials
                        .get(user)
                        .is_none_or(|c| !c.contains_key(&mechanism))
                })
                .await;
        }
    }
    Ok(())
}
