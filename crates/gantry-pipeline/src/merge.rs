//! The merge order of a partition's two topics (contract §3): the head with the smaller
//! Kafka timestamp goes first, account events first on a tie. Used both live and in replay,
//! so the two orders cannot drift apart.

/// Which side to take when both heads are present.
#[inline]
pub(crate) fn lane_first(lane_ts: i64, acct_ts: i64) -> bool {
    lane_ts < acct_ts
}

/// Replays a batch: merges the two recorded sequences (each in offset order) into the order
/// the live worker processed them. `f(is_lane, index)`.
pub(crate) fn head_merge(lane_ts: &[i64], acct_ts: &[i64], mut f: impl FnMut(bool, usize)) {
    let (mut i, mut j) = (0, 0);
    while i < lane_ts.len() || j < acct_ts.len() {
        let take_lane = match (lane_ts.get(i), acct_ts.get(j)) {
            (Some(&l), Some(&a)) => lane_first(l, a),
            (Some(_), None) => true,
            _ => false,
        };
        if take_lane {
            f(true, i);
            i += 1;
        } else {
            f(false, j);
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_events_win_ties_and_heads_decide() {
        let mut order = Vec::new();
        head_merge(&[5, 10, 10, 30], &[1, 10, 40], |lane, i| order.push((lane, i)));
        assert_eq!(
            order,
            vec![(false, 0), (true, 0), (false, 1), (true, 1), (true, 2), (true, 3), (false, 2)]
        );
        // Non-monotone partitions: only the heads are compared, never a global sort.
        let mut order = Vec::new();
        head_merge(&[20, 1], &[10], |lane, i| order.push((lane, i)));
        assert_eq!(order, vec![(false, 0), (true, 0), (true, 1)]);
    }
}
