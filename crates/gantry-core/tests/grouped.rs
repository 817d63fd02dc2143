//! `Engine::lane_messages` (records parsed and looked up a group at a time) must produce
//! exactly the batch `Engine::lane_message` produces one message at a time: same rows in the
//! same order, same text, same state afterwards. Checked on generated traffic with duplicates
//! (some inside one group), bad records, unknown cards, CPC and multi-unit records, messages
//! holding several records (some more than a group holds), and runs of every length around
//! the group size.

use gantry_core::engine::{WARM_GROUP_CAPACITY, WARM_GROUP_RECORDS};
use gantry_core::output::{Batch, Source, Topic};
use gantry_core::tariff::TariffSet;
use gantry_core::{Engine, EngineConfig};
use gantry_gen::{Network, Traffic, TrafficConfig};

struct Stream {
    tariffs: TariffSet,
    /// (is_lane, message, timestamp)
    msgs: Vec<(bool, Vec<u8>, i64)>,
}

fn stream(records: u64, duplicate_rate: f64) -> Stream {
    let net = Network::new(5, 200, 6);
    let tariffs = TariffSet::default().with(net.tariff_version().unwrap()).unwrap();
    let cfg = TrafficConfig {
        cards: 300,
        records,
        duplicate_rate,
        bad_rate: 0.02,
        unknown_card_rate: 0.02,
        days: 2,
        ..TrafficConfig::default()
    };
    let mut traffic = Traffic::new(cfg, &net);
    let mut msgs = Vec::new();
    while let Some(m) = traffic.next_message() {
        msgs.push((m.topic == gantry_gen::Topic::LaneTx, m.value.to_vec(), m.timestamp_ms));
    }
    // Some messages of several records (lanes may batch), one of them with a bad record inside.
    let lanes: Vec<usize> = msgs.iter().enumerate().filter(|(_, m)| m.0).map(|(i, _)| i).collect();
    for w in lanes.chunks(7).step_by(5).take(40) {
        let mut joined = Vec::new();
        for &i in &w[..3.min(w.len())] {
            joined.extend_from_slice(&msgs[i].1);
            joined.push(b'\n');
        }
        joined.extend_from_slice(b"{\"tradeId\":1}\n");
        msgs[w[0]].1 = joined;
    }
    // A few messages holding more records than a group has room for (a lane's backlog sent
    // at once): the group is settled in the middle of a message.
    for w in lanes.chunks(WARM_GROUP_CAPACITY + 6).skip(2).step_by(6).take(3) {
        let mut joined = Vec::new();
        for &i in w {
            joined.extend_from_slice(&msgs[i].1);
            joined.push(b'\n');
        }
        msgs[w[0]].1 = joined;
    }
    Stream { tariffs, msgs }
}

fn src(is_lane: bool, offset: usize, ts: i64) -> Source {
    Source {
        topic: if is_lane { Topic::LaneTx } else { Topic::AccountEvents },
        partition: 3,
        offset: offset as i64,
        timestamp_ms: Some(ts),
    }
}

/// Every message one at a time.
fn one_at_a_time(s: &Stream) -> (Batch, Vec<u8>) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    for (i, (lane, m, ts)) in s.msgs.iter().enumerate() {
        if *lane {
            engine.lane_message(&s.tariffs, m, src(true, i, *ts), &mut out);
        } else {
            engine.account_message(m, src(false, i, *ts), &mut out);
        }
    }
    let mut state = Vec::new();
    engine.write_state(&mut state);
    (out, state)
}

/// Consecutive lane messages in runs of at most `run`, account events one at a time.
fn in_runs(s: &Stream, run: usize) -> (Batch, Vec<u8>) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    let mut i = 0;
    while i < s.msgs.len() {
        if s.msgs[i].0 {
            let mut j = i;
            while j < s.msgs.len() && s.msgs[j].0 && j - i < run {
                j += 1;
            }
            let msgs = s.msgs[i..j]
                .iter()
                .enumerate()
                .map(|(k, (_, m, ts))| (m.as_slice(), src(true, i + k, *ts)));
            engine.lane_messages(&s.tariffs, msgs, &mut out);
            i = j;
        } else {
            engine.account_message(&s.msgs[i].1, src(false, i, s.msgs[i].2), &mut out);
            i += 1;
        }
    }
    let mut state = Vec::new();
    engine.write_state(&mut state);
    (out, state)
}

#[test]
fn runs_of_any_length_give_the_same_batch_and_state() {
    let s = stream(6_000, 0.05);
    let (want, want_state) = one_at_a_time(&s);
    // The stream exercises what the groups must get right.
    assert!(
        want.counts.lane_duplicates > 100
            && want.counts.lane_rejected > 100
            && want.counts.settled > 4_000,
        "{:?}",
        want.counts
    );
    assert!(!want.status.is_empty());
    const G: usize = WARM_GROUP_RECORDS;
    for run in [1, 2, 15, 16, 17, 33, G - 1, G, G + 1, 2 * G + 1, 4 * G, usize::MAX] {
        let (got, got_state) = in_runs(&s, run);
        assert_eq!(got.counts, want.counts, "run {run}");
        assert!(got == want, "run {run}: rows differ");
        assert!(got_state == want_state, "run {run}: state differs");
    }
}

#[test]
fn duplicates_inside_one_group_are_caught() {
    // Every lane message twice in a row: each second copy lands in the same group as the first.
    let mut s = stream(2_000, 0.0);
    s.msgs =
        s.msgs.into_iter().flat_map(|m| if m.0 { vec![m.clone(), m] } else { vec![m] }).collect();
    let (want, _) = one_at_a_time(&s);
    let (got, _) = in_runs(&s, usize::MAX);
    assert!(got == want);
    assert!(got.counts.lane_duplicates >= 2_000, "{:?}", got.counts);
}
