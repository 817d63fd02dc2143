//! The merge order of a partition's two topics (contract §3): the head with the smaller
//! Kafka timestamp goes first, account events first on a tie. Used both live and in replay,
//! so the two orders cannot drift apart.
//!
//! Everything here is a pure decision over what a worker has buffered: no clock, no I/O.
//! The worker gathers the facts (`SideView`s, whether the merge wait has passed) and acts on
//! the [`Step`] it is told.

/// Which side to take when both heads are present.
#[inline]
pub(crate) fn lane_first(lane_ts: i64, acct_ts: i64) -> bool {
    lane_ts < acct_ts
}

/// What the live merge knows about one side of the partition pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SideView {
    /// The Kafka timestamp of the side's next message; `None` when nothing is buffered or the
    /// side is closed for this batch.
    pub head_ts: Option<i64>,
    /// No more messages of this side in the current batch (its range ends here).
    pub closed: bool,
    /// At the partition's end with nothing buffered: nothing can be waiting to arrive.
    pub exhausted: bool,
    /// Anything (a message or an end-of-partition) arrived from this side since the worker
    /// started: until then the other side waits without limit.
    pub heard: bool,
}

/// How a wait for the other side stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Still within `merge_idle_ms` (or not waiting at all).
    Within,
    /// `merge_idle_ms` has passed since the merge blocked.
    Passed,
    /// The worker's channel is closed (revoked, or stopping): nothing else will arrive. A
    /// side is still never given up on — an account event not fetched yet may precede the
    /// lane head — so what the rule does not allow now is left unprocessed, for the next
    /// owner (or the restart) to read again with the rest.
    Draining,
}

/// What the worker does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Process the lane head (and the run after it that the rule would choose next).
    Lane,
    /// Process the account head.
    Account,
    /// Close the account side for this batch, then process the lane head.
    CloseAccountThenLane,
    /// Close the lane side for this batch, then process the account head.
    CloseLaneThenAccount,
    /// Nothing is buffered on either side.
    Idle,
    /// A head waits for the other side (which is neither closed, at its end, nor waited for
    /// long enough): start or keep the merge-wait timer.
    Blocked,
}

/// The merge rule of contract §3 as the live worker applies it. A side with no head is
/// waited for unless it is closed for this batch, at its end, or the wait has passed (and it
/// has been heard from at all, so a slow first fetch cannot let lane records overtake the
/// account events that open their cards); a side given up on is closed for the rest of the
/// batch, so its range ends there and replaying the recorded ranges merges the same way.
pub(crate) fn next_step(lane: SideView, acct: SideView, wait: Wait) -> Step {
    let gave_up = |side: SideView| match wait {
        Wait::Draining if crate::mutation::on("drain_gives_up") => side.heard,
        Wait::Within | Wait::Draining => false,
        Wait::Passed => side.heard,
    };
    match (lane.head_ts, acct.head_ts) {
        (Some(l), Some(a)) => {
            if lane_first(l, a) {
                Step::Lane
            } else {
                Step::Account
            }
        }
        (Some(_), None) if acct.closed => Step::Lane,
        (None, Some(_)) if lane.closed => Step::Account,
        (Some(_), None) if acct.exhausted || gave_up(acct) => Step::CloseAccountThenLane,
        (None, Some(_)) if lane.exhausted || gave_up(lane) => Step::CloseLaneThenAccount,
        (None, None) => Step::Idle,
        _ => Step::Blocked,
    }
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

/// Whether a worker closes its open batch now. A full batch, or one whose sides are both
/// closed (it cannot take more), closes as soon as the batch before it has landed; so does a
/// batch due by `flush_interval_ms`. Until the previous batch has landed a due batch keeps
/// growing (at most one batch per partition is in flight), and an empty batch never closes.
pub(crate) fn close_batch(batch: BatchView) -> bool {
    batch.messages > 0
        && (batch.full || batch.both_sides_closed || (batch.due && batch.previous_landed))
}

/// What [`close_batch`] looks at.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchView {
    pub messages: u64,
    /// At `batch_rows_max` rows or `batch_bytes_max` bytes of text.
    pub full: bool,
    pub both_sides_closed: bool,
    /// Its first message is `flush_interval_ms` old.
    pub due: bool,
    pub previous_landed: bool,
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

    const HEARD: SideView =
        SideView { head_ts: None, closed: false, exhausted: false, heard: true };

    fn head(ts: i64) -> SideView {
        SideView { head_ts: Some(ts), ..HEARD }
    }

    /// The live merge rule, case by case: heads compared, a closed side not waited for, an
    /// exhausted side closed, an idle side waited for until the wait passes — but a side never
    /// heard from waited for without limit — and, when draining, only what needs no wait.
    #[test]
    fn the_merge_rule_case_by_case() {
        let closed = SideView { closed: true, ..HEARD };
        let exhausted = SideView { exhausted: true, ..HEARD };
        let silent = SideView { heard: false, ..HEARD };
        use Step::*;
        use Wait::*;
        let cases = [
            // (lane, account, wait) → step
            (head(5), head(5), Within, Account), // a tie: account events first
            (head(4), head(5), Within, Lane),
            (head(6), head(5), Within, Account),
            (head(5), closed, Within, Lane),
            (closed, head(5), Within, Account),
            (head(5), exhausted, Within, CloseAccountThenLane),
            (exhausted, head(5), Within, CloseLaneThenAccount),
            (head(5), HEARD, Within, Blocked),
            (head(5), HEARD, Passed, CloseAccountThenLane),
            (HEARD, head(5), Passed, CloseLaneThenAccount),
            (head(5), silent, Passed, Blocked), // never heard from: wait without limit
            (silent, head(5), Passed, Blocked),
            // Draining never gives up on a side that may still hold an earlier message: the
            // worker stops there and leaves the rest to be read again.
            (head(5), silent, Draining, Blocked),
            (silent, head(5), Draining, Blocked),
            (head(5), HEARD, Draining, Blocked),
            (head(5), exhausted, Draining, CloseAccountThenLane),
            (head(5), closed, Draining, Lane),
            (HEARD, HEARD, Within, Idle),
            (HEARD, HEARD, Draining, Idle),
            (closed, closed, Within, Idle),
        ];
        for (i, (lane, acct, wait, want)) in cases.into_iter().enumerate() {
            assert_eq!(next_step(lane, acct, wait), want, "case {i}: {lane:?} {acct:?} {wait:?}");
        }
    }

    #[test]
    fn when_a_batch_closes() {
        let open = BatchView { messages: 3, ..BatchView::default() };
        assert!(!close_batch(open), "neither full, closed nor due");
        assert!(close_batch(BatchView { full: true, ..open }));
        assert!(close_batch(BatchView { both_sides_closed: true, ..open }));
        assert!(!close_batch(BatchView { due: true, ..open }), "due, previous still landing");
        assert!(close_batch(BatchView { due: true, previous_landed: true, ..open }));
        let empty = BatchView { messages: 0, full: true, due: true, previous_landed: true, ..open };
        assert!(!close_batch(empty), "an empty batch never closes");
    }
}
