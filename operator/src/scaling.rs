//! Decisions about how many brokers the StatefulSet may run.

/// The replica count the StatefulSet gets for `requested` brokers, and why it differs when it
/// does.
///
/// Invariant: the controller quorum's voters (node ids = pod ordinals) always have pods, since
/// removing a voter would shrink the quorum that every broker depends on.
pub fn effective_replicas(requested: i32, voters: &[i32]) -> (i32, Option<String>) {
    let needed = voters.iter().max().map_or(1, |highest| highest + 1);
    if requested < needed {
        (
            needed,
            Some(format!(
                "cannot scale to {requested} brokers: brokers 0..{} are the controller quorum's voters and must stay",
                needed - 1
            )),
        )
    } else {
        (requested, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_up_and_down_to_the_voters_is_allowed() {
        assert_eq!(effective_replicas(5, &[0, 1, 2]), (5, None));
        assert_eq!(effective_replicas(3, &[0, 1, 2]), (3, None));
    }

    #[test]
    fn scaling_below_the_voters_is_refused_with_a_reason() {
        let (replicas, problem) = effective_replicas(2, &[0, 1, 2]);
        assert_eq!(replicas, 3);
        assert!(problem.expect("reason").contains("controller quorum"));
    }
}
