//! Pure decisions about a partition's segments: when the active segment rolls, and which
//! segments retention deletes. No I/O here; the partition log applies the decisions.

/// What the roll and retention decisions need to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Largest record timestamp in the segment, `i64::MIN` when it holds no batch.
    pub max_timestamp: i64,
}

/// Why the active segment must roll before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    /// The append would take the segment past `segment.bytes`.
    Size,
    /// The incoming batch is more than `segment.ms` newer than the segment's first batch.
    Age,
    /// An index has no room for the entries the append may add.
    IndexFull,
    /// The append's offsets do not fit 32-bit offsets relative to the segment's base.
    OffsetRange,
}

/// The state of the active segment and the incoming append, as the roll decision sees them.
#[derive(Debug, Clone, Copy)]
pub struct RollInput {
    pub active_size_bytes: u64,
    pub active_first_batch_timestamp: i64,
    pub active_indexes_full: bool,
    pub active_can_hold_offsets: bool,
    pub incoming_bytes: u64,
    pub incoming_max_timestamp: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
}

/// Decides whether the active segment rolls before an append. An empty segment never rolls:
/// it takes the append even when that alone exceeds `segment.bytes`.
pub fn roll_reason(input: &RollInput) -> Option<RollReason> {
    if input.active_size_bytes == 0 {
        return None;
    }
    if input.active_size_bytes + input.incoming_bytes > input.segment_bytes {
        return Some(RollReason::Size);
    }
    if input.active_indexes_full {
        return Some(RollReason::IndexFull);
    }
    if !input.active_can_hold_offsets {
        return Some(RollReason::OffsetRange);
    }
    let first = input.active_first_batch_timestamp;
    if first != i64::MIN && input.incoming_max_timestamp.saturating_sub(first) > input.segment_ms {
        return Some(RollReason::Age);
    }
    None
}

/// Retention limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionLimits {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
}

/// What a retention pass should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    /// Roll the active segment first, because it too is past retention.
    pub roll_active: bool,
    /// Delete this many segments from the oldest.
    pub delete_oldest: usize,
}

/// Decides which whole segments retention deletes, oldest first. `segments` are ordered by
/// base offset and the last one is the active segment, which is never deleted (when it too has
/// expired by time and holds data, the plan rolls it first so that it can go in a later pass).
/// A segment is only deleted when all its records are below `high_watermark`.
pub fn retention_plan(
    segments: &[SegmentStats],
    limits: RetentionLimits,
    now_ms: i64,
    high_watermark: i64,
) -> RetentionPlan {
    let Some((active, closed)) = segments.split_last() else {
        return RetentionPlan::default();
    };
    let below_hw = |s: &SegmentStats| s.next_offset <= high_watermark;
    let expired = |s: &SegmentStats| {
        limits
            .retention_ms
            .is_some_and(|ms| s.max_timestamp != i64::MIN && now_ms - s.max_timestamp > ms)
    };

    let mut by_time = 0;
    while by_time < closed.len() && expired(&closed[by_time]) && below_hw(&closed[by_time]) {
        by_time += 1;
    }
    let roll_active =
        by_time == closed.len() && active.size_bytes > 0 && expired(active) && below_hw(active);

    let mut by_size = 0;
    if let Some(limit) = limits.retention_bytes {
        let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
        let mut excess = total.saturating_sub(limit);
        while by_size < closed.len()
            && closed[by_size].size_bytes <= excess
            && below_hw(&closed[by_size])
        {
            excess -= closed[by_size].size_bytes;
            by_size += 1;
        }
    }
    RetentionPlan {
        roll_active,
        delete_oldest: by_time.max(by_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, next: i64, size: u64, ts: i64) -> SegmentStats {
        SegmentStats {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            max_timestamp: ts,
        }
    }

    fn roll_input() -> RollInput {
        RollInput {
            active_size_bytes: 100,
            active_first_batch_timestamp: 1_000,
            active_indexes_full: false,
            active_can_hold_offsets: true,
            incoming_bytes: 10,
            incoming_max_timestamp: 1_500,
            segment_bytes: 1_000,
            segment_ms: 600,
        }
    }

    #[test]
    fn rolls_on_size_age_and_full_index() {
        assert_eq!(roll_reason(&roll_input()), None);
        assert_eq!(
            roll_reason(&RollInput {
                incoming_bytes: 901,
                ..roll_input()
            }),
            Some(RollReason::Size)
        );
        assert_eq!(
            roll_reason(&RollInput {
                incoming_max_timestamp: 1_601,
                ..roll_input()
            }),
            Some(RollReason::Age)
        );
        assert_eq!(
            roll_reason(&RollInput {
                active_indexes_full: true,
                ..roll_input()
            }),
            Some(RollReason::IndexFull)
        );
        assert_eq!(
            roll_reason(&RollInput {
                active_can_hold_offsets: false,
                ..roll_input()
            }),
            Some(RollReason::OffsetRange)
        );
    }

    #[test]
    fn empty_segment_takes_an_oversized_append() {
        let input = RollInput {
            active_size_bytes: 0,
            incoming_bytes: 5_000,
            ..roll_input()
        };
        assert_eq!(roll_reason(&input), None);
    }

    #[test]
    fn time_retention_deletes_expired_prefix_only() {
        let segments = [
            seg(0, 10, 100, 100),
            seg(10, 20, 100, 900),
            seg(20, 30, 100, 200),
            seg(30, 35, 50, 950),
        ];
        let limits = RetentionLimits {
            retention_ms: Some(500),
            retention_bytes: None,
        };
        // now 1000: segments with max ts < 500 expire, but the second one stops the prefix.
        assert_eq!(
            retention_plan(&segments, limits, 1_000, 35),
            RetentionPlan {
                roll_active: false,
                delete_oldest: 1
            }
        );
    }

    #[test]
    fn size_retention_keeps_total_at_or_under_limit() {
        let segments = [
            seg(0, 10, 100, 1),
            seg(10, 20, 100, 1),
            seg(20, 30, 100, 1),
            seg(30, 35, 50, 1),
        ];
        let limits = RetentionLimits {
            retention_ms: None,
            retention_bytes: Some(200),
        };
        assert_eq!(retention_plan(&segments, limits, 0, 35).delete_oldest, 1);
        let limits = RetentionLimits {
            retention_ms: None,
            retention_bytes: Some(150),
        };
        assert_eq!(retention_plan(&segments, limits, 0, 35).delete_oldest, 2);
        let limits = RetentionLimits {
            retention_ms: None,
            retention_bytes: Some(0),
        };
        assert_eq!(
            retention_plan(&segments, limits, 0, 35).delete_oldest,
            3,
            "never the active one"
        );
    }

    #[test]
    fn nothing_above_the_high_watermark_is_deleted() {
        let segments = [seg(0, 10, 100, 1), seg(10, 20, 100, 1), seg(20, 30, 100, 1)];
        let limits = RetentionLimits {
            retention_ms: Some(0),
            retention_bytes: Some(0),
        };
        assert_eq!(
            retention_plan(&segments, limits, 1_000, 15).delete_oldest,
            1
        );
    }

    #[test]
    fn an_expired_active_segment_is_rolled_first() {
        let segments = [seg(0, 10, 100, 1), seg(10, 20, 100, 2)];
        let limits = RetentionLimits {
            retention_ms: Some(10),
            retention_bytes: None,
        };
        assert_eq!(
            retention_plan(&segments, limits, 1_000, 20),
            RetentionPlan {
                roll_active: true,
                delete_oldest: 1
            }
        );
    }
}
