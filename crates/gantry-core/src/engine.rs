//! The per-partition settlement state machine: parse → check → price → deduplicate → debit.
//!
//! One [`Engine`] owns the state of one input partition pair (its dedup set and the
//! accounts of the cards keyed to it) and is driven by one thread: share-nothing, no locks.
//! Feeding it the same messages in the same order from the same state yields the same rows,
//! which is what makes checkpoint-and-replay exactly once (see ARCHITECTURE.md).
//!
//! Per lane record, in order:
//! 1. parse; a malformed record is rejected with its raw bytes;
//! 2. a `transTime` further than `max_future_skew_ms` ahead of the message's Kafka timestamp
//!    or of the batch's clock (Gantry's own clock when the batch opened, journaled with the
//!    batch so a replay decides the same) is rejected `time_in_future`: no record can drag
//!    the dedup window ahead of real time, whatever its Kafka timestamp says;
//! 3. price with the version in force at `transTime`; unknown unit/class or no version in
//!    force rejects (the id is not remembered, so a corrected resend is still taken);
//! 4. deduplicate by `tradeId`: a duplicate is recorded and has no other effect; a record
//!    older than the window is *parked* in the batch ([`crate::output::LateRecord`]) — the pipeline looks up
//!    whether it was settled before and [`Engine::settle_late`] then decides it, after the
//!    rest of the batch (contract §3, late records). Under [`LatePolicy::Reject`] (replays
//!    of batches journaled before late records were checked) it is rejected
//!    `outside_dedup_window` instead;
//! 5. ETC: debit the card (always: the vehicle has passed); an unknown card is rejected
//!    `unknown_card` with the price in `detail`, for recovery. CPC: settled, never debited.

use crate::accounts::{Accounts, Movement};
use crate::codec::{Reader, StateError};
use crate::dedup::{DedupKey, DedupSet, IdKind, Verdict, DEFAULT_WINDOW_MS};
use crate::output::{
    Batch, DuplicateRow, EntryKind, LedgerRow, RejectRow, Settlement, Source, SplitRow, StatusRow,
    Text,
};
use crate::parse::{for_each_account_event, for_each_lane_record, ParseConfig};
use crate::pricing::{flags, price_known_unit, Priced, Split};
use crate::record::{
    AccountEvent, AccountEventKind, CardId, CardStatus, LaneTx, MediaType, CARD_ID_DIGITS_MAX,
};
use crate::reject::RejectReason;
use crate::tariff::{TariffSet, TariffVersion};
use crate::time::local_day;

/// Default allowance for lane clocks running ahead of the message timestamp: an hour covers
/// clock drift and time-zone slips without letting a broken clock move the dedup window far.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: i64 = 3_600_000;

#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub parse: ParseConfig,
    pub dedup_window_ms: i64,
    /// A stored-value card below this balance (fen) is listed `insufficient_balance`.
    pub min_balance_fen: i64,
    pub max_future_skew_ms: i64,
    /// Trade ids the dedup table has room for from the start (a partition's lane records per
    /// window in steady state). Growing a table of millions of ids copies all of them at once,
    /// a pause of its own; 0 grows as needed.
    pub dedup_expected_ids: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            parse: ParseConfig::default(),
            dedup_window_ms: DEFAULT_WINDOW_MS,
            min_balance_fen: 0,
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
            dedup_expected_ids: 0,
        }
    }
}

/// Lane records parsed and looked up together by [`Engine::lane_messages`] before any of them
/// is settled. A card's lookup is a chain of dependent cache misses; the CPU overlaps the
/// chains of different cards only if their lookups sit close together in the instruction
/// stream, so each group's lookups run in one tight loop, a pass per link, and each pass
/// waits for the one before once per group: larger groups wait less often, up to 64, past
/// which nothing was gained (the sizes tried are in `bench/PERFORMANCE.md`). 64 is also the
/// most lane messages the pipeline hands the engine at once; the group's parsed records (~300 B each,
/// ~19 KiB) still fit L1.
pub const WARM_GROUP_RECORDS: usize = 64;

/// Records a warm-up group holds at most: a message's records go into one group whole unless
/// it has more than [`WARM_GROUP_RECORDS`] of them, so a group may fill past that before it
/// is settled. [`crate::accounts::WARM_CARDS_MAX`] is this, so every card of a group is warmed.
pub const WARM_GROUP_CAPACITY: usize = WARM_GROUP_RECORDS * 2;

/// What a group's warm-up looked up for one of its records (`None`: look it up when
/// settling): its trade id's dedup key, and a one-unit record's unit index in the version in
/// force at its `transTime`.
#[derive(Clone, Copy, Default)]
struct Warmed {
    key: Option<DedupKey>,
    unit: Option<u32>,
}

/// What the engine does with a lane record older than its dedup window, set per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatePolicy {
    /// Park it for the lookup of what is already settled, then [`Engine::settle_late`].
    #[default]
    Park,
    /// Reject it `outside_dedup_window`: how every batch journaled before late records were
    /// looked up was processed, so a replay of one decides as it did.
    Reject,
}

/// How a lane record older than the dedup window is decided when met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Late {
    /// First met: as the batch's [`LatePolicy`] says.
    ByPolicy,
    /// Met again in [`Engine::settle_late`]: settled before (or an earlier copy of it is
    /// settled now), so a duplicate.
    SettledBefore,
    /// Met again in [`Engine::settle_late`]: never settled, so settled now.
    NotSettled,
}

/// A parsed lane record waiting in a group.
struct Parsed<'m> {
    raw: &'m [u8],
    rec: Result<LaneTx<'m>, RejectReason>,
    src: Source,
}

pub struct Engine {
    cfg: EngineConfig,
    /// `tradeId`s; its window follows lane `transTime` only.
    dedup: DedupSet,
    /// `topupId`s and `adjustId`s; a window of their own, following account-event time, so
    /// a burst of account events merged ahead of lane records cannot push lane records out
    /// of the trade window (and the other way round).
    event_dedup: DedupSet,
    accounts: Accounts,
    /// Reused per record: the splits of the record being priced.
    splits: Vec<Split>,
    tariff_texts: TariffTexts,
    /// The batch's clock (ms since 1970), set by the caller per batch: no record may be
    /// dated more than `max_future_skew_ms` past it. Not state: a replay sets the clock
    /// the batch was journaled with.
    clock_ms: i64,
    /// The batch's late policy, set by the caller per batch like the clock.
    late_policy: LatePolicy,
}

/// [`Engine::set_clock_ms`] for "no clock": only the Kafka timestamps bound a record's time
/// (what batches journaled before the clock existed were processed with).
pub const NO_CLOCK_MS: i64 = i64::MAX;

/// The tariff's texts (version name, owners' ids) already copied into the current batch's
/// text arena, so each is copied once per batch instead of once per row. An entry counts
/// only for the batch filling ([`crate::output::BatchId`]) and the version it was made for.
/// (A split's unit id needs no entry: it is a part of the record's `tollIntervalId`, already
/// in the arena. Entries per unit were a table of thousands that missed the cache.)
#[derive(Default)]
struct TariffTexts {
    /// The versions met most recently (records near a version change may alternate).
    versions: Vec<VersionTexts>,
}

/// Versions whose texts [`TariffTexts`] keeps at once: a batch spans one version change at
/// most in practice; four leaves room for late records of older versions.
const TARIFF_TEXT_VERSIONS_MAX: usize = 4;

struct VersionTexts {
    instance: u64,
    name: BatchText,
    /// Per owner, by index.
    owners: Vec<BatchText>,
}

/// A text's range in a batch's arena and the batch filling it is in (0: none yet).
#[derive(Clone, Copy, Default)]
struct BatchText {
    batch: u64,
    range: Text,
}

impl BatchText {
    /// The range of `text` in `out`, copied there first if this filling of `out` lacks it.
    #[inline]
    fn get(&mut self, text: &str, out: &mut Batch) -> Text {
        let batch = out.id().get();
        if self.batch != batch {
            *self = BatchText { batch, range: out.push_text(text) };
        }
        self.range
    }
}

impl TariffTexts {
    /// The entry of `v` in `versions`, made if it is not there.
    #[inline]
    fn index_of(&mut self, v: &TariffVersion) -> usize {
        match self.versions.iter().position(|t| t.instance == v.instance()) {
            Some(i) => i,
            None => {
                if self.versions.len() == TARIFF_TEXT_VERSIONS_MAX {
                    self.versions.remove(0);
                }
                self.versions.push(VersionTexts {
                    instance: v.instance(),
                    name: BatchText::default(),
                    owners: vec![BatchText::default(); v.owners.len()],
                });
                self.versions.len() - 1
            }
        }
    }
}

impl VersionTexts {
    #[inline]
    fn name(&mut self, v: &TariffVersion, out: &mut Batch) -> Text {
        self.name.get(&v.version, out)
    }

    /// The id of the unit's owner.
    #[inline]
    fn owner(&mut self, v: &TariffVersion, unit: u32, out: &mut Batch) -> Text {
        self.owners[v.unit(unit).owner as usize].get(v.owner_of(unit), out)
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            dedup: DedupSet::with_capacity(cfg.dedup_window_ms, cfg.dedup_expected_ids),
            event_dedup: DedupSet::new(cfg.dedup_window_ms),
            accounts: Accounts::new(cfg.min_balance_fen),
            splits: Vec::with_capacity(8),
            tariff_texts: TariffTexts::default(),
            clock_ms: NO_CLOCK_MS,
            late_policy: LatePolicy::Park,
        }
    }

    /// Sets what the next records older than the dedup window get (see [`LatePolicy`]).
    pub fn set_late_policy(&mut self, policy: LatePolicy) {
        self.late_policy = policy;
    }

    /// Decides the lane records this batch parked as late (`out.late`), in the order they
    /// were parked, after everything else in the batch — that is their place in the ledger.
    /// `settled_before[i]` says whether `out.late[i]`'s `tradeId` was settled in an earlier
    /// batch (the pipeline's lookup; a replay passes the answers journaled with the batch,
    /// so it decides the same). One settled before, or settled earlier in this batch, or a
    /// later copy of one settled here, is a duplicate; any other is settled (priced,
    /// debited) as if it were in the window.
    pub fn settle_late(&mut self, tariffs: &TariffSet, settled_before: &[bool], out: &mut Batch) {
        assert_eq!(settled_before.len(), out.late.len(), "an answer per parked record");
        let decisions: Vec<Late> = {
            // A record settled earlier in this same batch (inside the window then, before
            // the window moved past it) is not in ClickHouse yet, so the lookup cannot see it:
            // it counts as a first copy too.
            let mut first_copies = hashbrown::HashSet::with_capacity(out.late.len());
            first_copies.extend(out.settlements.iter().map(|s| out.text_bytes(s.trade_id)));
            out.late
                .iter()
                .zip(settled_before)
                .map(|(r, &before)| {
                    let first = first_copies.insert(out.text_bytes(r.trade_id));
                    if before || !first {
                        Late::SettledBefore
                    } else {
                        Late::NotSettled
                    }
                })
                .collect()
        };
        let parked = out.take_late();
        let parse_cfg = self.cfg.parse;
        for (r, decision) in parked.0.iter().zip(decisions) {
            let bytes = r.bytes(&parked.1);
            let mut records = 0;
            for_each_lane_record(bytes, &parse_cfg, |raw, rec| {
                records += 1;
                match rec {
                    Ok(tx) => {
                        let w = Warmed::default();
                        self.lane_record(tariffs, &tx, raw, w, r.source, out, decision)
                    }
                    // It parsed when it was parked, and the same bytes parse the same; were
                    // that ever untrue, the record is still accounted for, as a reject.
                    Err(reason) => {
                        out.counts.lane_rejected += 1;
                        reject(
                            out,
                            r.source,
                            reason,
                            raw,
                            None,
                            r.source.timestamp_ms.unwrap_or(0),
                        );
                    }
                }
            });
            debug_assert_eq!(records, 1, "a parked record is one record");
        }
        out.put_late(parked);
    }

    /// Sets the clock the next records are checked against (see `clock_ms`).
    pub fn set_clock_ms(&mut self, clock_ms: i64) {
        self.clock_ms = clock_ms;
    }

    /// The latest time a record of `src` may be dated: `max_future_skew_ms` past the
    /// earlier of its Kafka timestamp and the batch's clock.
    #[inline]
    fn future_limit_ms(&self, src: &Source) -> i64 {
        let now = src.timestamp_ms.map_or(self.clock_ms, |ts| ts.min(self.clock_ms));
        now.saturating_add(self.cfg.max_future_skew_ms)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn dedup(&self) -> &DedupSet {
        &self.dedup
    }

    /// Processes one lane-tx message (one or more records) into `out`.
    pub fn lane_message(&mut self, tariffs: &TariffSet, msg: &[u8], src: Source, out: &mut Batch) {
        out.counts.messages += 1;
        let parse_cfg = self.cfg.parse;
        for_each_lane_record(msg, &parse_cfg, |raw, rec| {
            self.lane_outcome(tariffs, raw, rec.as_ref(), Warmed::default(), src, out)
        });
    }

    /// Processes lane-tx messages in order into `out`: the same rows as
    /// [`lane_message`](Self::lane_message) on each in turn, faster. Records are parsed
    /// [`WARM_GROUP_RECORDS`] at a time and their cards and trade ids looked up together
    /// before any of them is settled, so the cache misses of a group overlap instead of
    /// queueing one record after another (see [`Accounts::warm`]).
    pub fn lane_messages<'m>(
        &mut self,
        tariffs: &TariffSet,
        msgs: impl IntoIterator<Item = (&'m [u8], Source)>,
        out: &mut Batch,
    ) {
        let parse_cfg = self.cfg.parse;
        let mut group: Vec<Parsed<'m>> = Vec::with_capacity(WARM_GROUP_CAPACITY);
        for (msg, src) in msgs {
            out.counts.messages += 1;
            for_each_lane_record(msg, &parse_cfg, |raw, rec| {
                // A message of more records than the group has room for settles part of
                // itself here. Writing the record straight into the group's next slot, not
                // `push`ing it, saves a copy of each ~280-byte record.
                if group.len() == group.capacity() {
                    self.settle_group(tariffs, &mut group, out);
                }
                group.spare_capacity_mut()[0].write(Parsed { raw, rec, src });
                // SAFETY: the slot at `len` (inside the capacity, checked above) was just
                // written, so the first `len + 1` elements are initialised.
                unsafe { group.set_len(group.len() + 1) };
            });
            if group.len() >= WARM_GROUP_RECORDS {
                self.settle_group(tariffs, &mut group, out);
            }
        }
        self.settle_group(tariffs, &mut group, out);
    }

    /// Warms the group's lookups, then settles its records in order and empties it.
    fn settle_group(&mut self, tariffs: &TariffSet, group: &mut Vec<Parsed<'_>>, out: &mut Batch) {
        let mut warmed = [Warmed::default(); WARM_GROUP_CAPACITY];
        let mut cards = [CardId::from_parts(0, 0); WARM_GROUP_CAPACITY];
        let mut n = 0;
        for (p, w) in group.iter().zip(warmed.iter_mut()) {
            if let Ok(tx) = &p.rec {
                w.key = Some(self.dedup.warm(IdKind::Trade, &tx.trade_id, tx.trans_time_ms));
                if let (MediaType::Etc, Some(card)) = (tx.media_type, tx.card_id) {
                    cards[n] = card;
                    n += 1;
                }
            }
        }
        self.accounts.warm(&cards[..n]);
        // One-unit records' units, looked up here for the whole group: the lookups' cache
        // misses (index slot, unit, unit id) overlap instead of each stalling its record's
        // pricing.
        for (p, w) in group.iter().zip(warmed.iter_mut()) {
            if let Ok(tx) = &p.rec {
                if tx.unit_count == 1 {
                    w.unit = tariffs
                        .version_at(tx.trans_time_ms)
                        .and_then(|v| v.unit_index(&tx.toll_interval_id));
                }
            }
        }
        // By reference, then cleared: moving each ~280-byte record out of the group was a
        // `memcpy` per record.
        for (p, w) in group.iter().zip(warmed) {
            self.lane_outcome(tariffs, p.raw, p.rec.as_ref(), w, p.src, out);
        }
        group.clear();
    }

    /// One lane record's parse result into `out`, with what the group's warm-up looked up.
    #[inline]
    fn lane_outcome(
        &mut self,
        tariffs: &TariffSet,
        raw: &[u8],
        rec: Result<&LaneTx<'_>, &RejectReason>,
        warmed: Warmed,
        src: Source,
        out: &mut Batch,
    ) {
        out.counts.lane_records += 1;
        match rec {
            Ok(tx) => self.lane_record(tariffs, tx, raw, warmed, src, out, Late::ByPolicy),
            Err(&reason) => {
                out.counts.lane_rejected += 1;
                reject(out, src, reason, raw, None, src.timestamp_ms.unwrap_or(0));
            }
        }
    }

    /// One parsed lane record, steps 2–5 of the module doc: each step below decides, and
    /// the branching between them (reject, duplicate, park, settle) is all here.
    #[allow(clippy::too_many_arguments)] // each is a different input of the one decision
    fn lane_record(
        &mut self,
        tariffs: &TariffSet,
        tx: &LaneTx<'_>,
        raw: &[u8],
        warmed: Warmed,
        src: Source,
        out: &mut Batch,
        late: Late,
    ) {
        let fail = |out: &mut Batch, reason: RejectReason, detail: Option<&str>| {
            out.counts.lane_rejected += 1;
            reject(out, src, reason, raw, detail, tx.trans_time_ms);
        };
        if tx.trans_time_ms > self.future_limit_ms(&src) {
            return fail(out, RejectReason::TimeInFuture, None);
        }
        let Some(version) = tariffs.version_at(tx.trans_time_ms) else {
            return fail(out, RejectReason::NoTariffInForce, None);
        };
        self.splits.clear();
        let offset = self.cfg.parse.network_utc_offset_min;
        let priced = match price_known_unit(tx, version, offset, &mut self.splits, warmed.unit) {
            Ok(p) => p,
            Err(RejectReason::UnknownInterval) => {
                let unknown =
                    tx.intervals().find(|u| version.unit_index(u).is_none()).unwrap_or("");
                return fail(out, RejectReason::UnknownInterval, Some(unknown));
            }
            Err(r) => return fail(out, r, None),
        };
        let key = warmed
            .key
            .unwrap_or_else(|| DedupKey::new(IdKind::Trade, &tx.trade_id, tx.trans_time_ms));
        match self.dedup.check_and_insert_key(key, tx.trans_time_ms) {
            Verdict::New => {}
            Verdict::Duplicate => return duplicate(out, tx, src),
            Verdict::TooOld => match (late, self.late_policy) {
                (Late::ByPolicy, LatePolicy::Park) => return self.park(tx, raw, src, out),
                (Late::ByPolicy, LatePolicy::Reject) => {
                    return fail(out, RejectReason::OutsideDedupWindow, None)
                }
                (Late::SettledBefore, _) => return duplicate(out, tx, src),
                (Late::NotSettled, _) => {}
            },
        }
        let debit = match self.debit(tx, &priced, out) {
            Ok(d) => d,
            Err(card) => {
                let detail = unknown_card_detail(card, &priced, version);
                return fail(out, RejectReason::UnknownCard, Some(&detail));
            }
        };
        self.settled_rows(tx, version, &priced, debit, src, out);
    }

    /// Step 4 for a record older than the window: parked in the batch, untouched, until
    /// [`settle_late`](Self::settle_late).
    #[cold]
    fn park(&self, tx: &LaneTx<'_>, raw: &[u8], src: Source, out: &mut Batch) {
        out.counts.lane_late += 1;
        let day = local_day(tx.trans_time_ms, self.cfg.parse.network_utc_offset_min) as i32;
        out.push_late(&tx.trade_id, day, raw, src);
    }

    /// Step 5: debits an ETC record's card (a CPC record is never debited); the unknown
    /// card when it was never opened.
    #[inline]
    fn debit(
        &mut self,
        tx: &LaneTx<'_>,
        priced: &Priced,
        out: &mut Batch,
    ) -> Result<Debit, CardId> {
        match (tx.media_type, tx.card_id) {
            (MediaType::Etc, Some(card)) => match self.accounts.apply(card, -priced.fee) {
                // The card's text as the lane wrote it is the id's canonical form (digits only).
                Some(m) => Ok(Debit {
                    card_text: out.push_text(tx.card_text.as_deref().unwrap_or_default()),
                    movement: Some(m),
                }),
                None => Err(card),
            },
            // The parser guarantees an ETC record has a card; CPC records are never debited.
            _ => Ok(Debit { card_text: Text::EMPTY, movement: None }),
        }
    }

    /// A settled record's rows: its settlement, a split per unit, the ledger debit (none for
    /// a zero fee) and a status-list change if the debit made one.
    #[inline]
    fn settled_rows(
        &mut self,
        tx: &LaneTx<'_>,
        version: &TariffVersion,
        priced: &Priced,
        debit: Debit,
        src: Source,
        out: &mut Batch,
    ) {
        out.counts.settled += 1;
        // The version's cached texts, looked up once for the settlement and its splits.
        let vi = self.tariff_texts.index_of(version);
        let tariff_version = self.tariff_texts.versions[vi].name(version, out);
        let settlement = self.settlement_row(tx, priced, &debit, tariff_version, src, out);
        let texts = &mut self.tariff_texts.versions[vi];
        for s in &self.splits {
            let owner_id = texts.owner(version, s.unit, out);
            out.splits.push(SplitRow {
                trade_id: settlement.trade_id,
                trade_day: settlement.trade_day,
                trans_time_ms: tx.trans_time_ms,
                interval_id: settlement.toll_interval_id.part(s.id_at as u32, s.id_len as u32),
                owner_id,
                issuer_id: settlement.issuer_id,
                vehicle_type: tx.vehicle_type,
                media_type: tx.media_type as u8,
                pay_fee: s.pay_fee,
                discount_fee: s.pay_fee - s.fee,
                fee: s.fee,
            });
        }
        debug_assert_eq!(
            self.splits.iter().map(|s| s.fee).sum::<i64>(),
            priced.fee,
            "the owners' shares add up to the fee (contract §2)"
        );
        if let Some(m) = debit.movement {
            if priced.fee != 0 {
                out.ledger.push(LedgerRow {
                    card_id: debit.card_text,
                    customer_id: settlement.customer_id,
                    entry_id: settlement.trade_id,
                    kind: EntryKind::Debit,
                    amount: -priced.fee,
                    balance_after: settlement.balance_after,
                    time_ms: tx.trans_time_ms,
                    entry_day: settlement.trade_day,
                    source: src,
                    batch_row: out.ledger.len() as u32,
                    trip: Some(out.settlements.len() as u32),
                });
            }
            push_status(out, m, debit.card_text, tx.trans_time_ms, src);
        }
        out.settlements.push(settlement);
    }

    /// The `settlements` row of a settled record (its texts pushed into `out`).
    #[inline]
    fn settlement_row(
        &mut self,
        tx: &LaneTx<'_>,
        priced: &Priced,
        debit: &Debit,
        tariff_version: Text,
        src: Source,
        out: &mut Batch,
    ) -> Settlement {
        let mut row_flags = priced.flags;
        let (customer_id, card_type, balance_after) = match debit.movement {
            Some(m) => {
                if m.was_listed {
                    row_flags |= flags::CARD_LISTED;
                }
                if m.balance_after < 0 {
                    row_flags |= flags::ARREARS;
                }
                let customer = out.push_text(self.accounts.customer(m.customer));
                (customer, m.card_type as u8, m.balance_after)
            }
            None => (Text::EMPTY, 0, 0),
        };
        let trade_id = out.push_text(&tx.trade_id);
        Settlement {
            trade_id,
            trans_time_ms: tx.trans_time_ms,
            trade_day: local_day(tx.trans_time_ms, self.cfg.parse.network_utc_offset_min) as i32,
            gantry_id: out.push_text(&tx.gantry_id),
            toll_interval_id: out.push_text(&tx.toll_interval_id),
            card_id: debit.card_text,
            obu_id: out.push_text(tx.obu_id.as_deref().unwrap_or("")),
            vehicle_plate: out.push_text(tx.vehicle_plate.as_deref().unwrap_or("")),
            pass_id: out.push_text(tx.pass_id.as_deref().unwrap_or("")),
            customer_id,
            issuer_id: debit.card_text.prefix(4),
            media_type: tx.media_type as u8,
            card_type,
            vehicle_type: tx.vehicle_type,
            vehicle_class: tx.vehicle_class,
            axle_count: tx.axle_count.unwrap_or(0),
            pay_fee: priced.pay_fee,
            discount_fee: priced.discount_fee,
            fee: priced.fee,
            lane_fee: tx.lane_fee,
            tariff_version,
            balance_after,
            flags: row_flags,
            source: src,
        }
    }

    /// Processes one account-events message into `out`.
    pub fn account_message(&mut self, msg: &[u8], src: Source, out: &mut Batch) {
        out.counts.messages += 1;
        let parse_cfg = self.cfg.parse;
        for_each_account_event(msg, &parse_cfg, |raw, ev| {
            out.counts.account_events += 1;
            let result = match ev {
                Ok(ev) => self.account_event(&ev, src, out),
                Err(r) => Err((r, src.timestamp_ms.unwrap_or(0))),
            };
            match result {
                Ok(true) => out.counts.events_applied += 1,
                Ok(false) => out.counts.events_duplicates += 1,
                Err((reason, time_ms)) => {
                    out.counts.events_rejected += 1;
                    reject(out, src, reason, raw, None, time_ms);
                }
            }
        });
    }

    /// Applies one event: `Ok(true)` applied, `Ok(false)` duplicate.
    fn account_event(
        &mut self,
        ev: &AccountEvent<'_>,
        src: Source,
        out: &mut Batch,
    ) -> Result<bool, (RejectReason, i64)> {
        let t = ev.time_ms;
        let err = |r| (r, t);
        if t > self.future_limit_ms(&src) {
            return Err(err(RejectReason::TimeInFuture));
        }
        let (entry, kind, amount, entry_kind) = match &ev.kind {
            AccountEventKind::Open { .. } => return self.open(ev, src, out).map_err(err),
            AccountEventKind::Status { status } => {
                return self.set_status(ev.card_id, *status, t, src, out).map_err(err)
            }
            AccountEventKind::Topup { topup_id, amount, .. } => {
                (topup_id, IdKind::Topup, *amount, EntryKind::Topup)
            }
            AccountEventKind::Adjust { adjust_id, amount, .. } => {
                (adjust_id, IdKind::Adjust, *amount, EntryKind::Adjust)
            }
        };
        // Money events: an unknown card is rejected before the id is remembered, so the
        // issuer can resend the same top-up once the card is opened.
        if self.accounts.get(ev.card_id).is_none() {
            return Err(err(RejectReason::UnknownCard));
        }
        match self.event_dedup.check_and_insert(kind, entry, t) {
            Verdict::New => {}
            Verdict::Duplicate => {
                let id = out.push_text(entry);
                let kind = if kind == IdKind::Topup { "topup" } else { "adjust" };
                out.duplicates.push(DuplicateRow { id, kind, source: src, time_ms: t });
                return Ok(false);
            }
            Verdict::TooOld => return Err(err(RejectReason::OutsideDedupWindow)),
        }
        let m = self.accounts.apply(ev.card_id, amount).expect("card checked above");
        let mut card_buf = [0u8; CARD_ID_DIGITS_MAX];
        let card_text = out.push_text(ev.card_id.write_to(&mut card_buf));
        let customer_id = out.push_text(self.accounts.customer(m.customer));
        let entry_id = out.push_text(entry);
        let entry_day = local_day(t, self.cfg.parse.network_utc_offset_min) as i32;
        out.ledger.push(LedgerRow {
            card_id: card_text,
            customer_id,
            entry_id,
            kind: entry_kind,
            amount,
            balance_after: m.balance_after,
            time_ms: t,
            entry_day,
            source: src,
            batch_row: out.ledger.len() as u32,
            trip: None,
        });
        push_status(out, m, card_text, t, src);
        Ok(true)
    }

    /// An `open` event: the account, its opening ledger row and its first listing state.
    fn open(
        &mut self,
        ev: &AccountEvent<'_>,
        src: Source,
        out: &mut Batch,
    ) -> Result<bool, RejectReason> {
        let AccountEventKind::Open {
            customer_id,
            card_type,
            vehicle_type,
            balance,
            credit_limit,
            ..
        } = &ev.kind
        else {
            unreachable!("called for open events only");
        };
        let (card, t) = (ev.card_id, ev.time_ms);
        let m = self.accounts.open(
            card,
            customer_id,
            *card_type,
            *vehicle_type,
            *balance,
            *credit_limit,
        )?;
        let mut card_buf = [0u8; CARD_ID_DIGITS_MAX];
        let card_text = out.push_text(card.write_to(&mut card_buf));
        let customer = out.push_text(customer_id);
        out.ledger.push(LedgerRow {
            card_id: card_text,
            customer_id: customer,
            entry_id: card_text,
            kind: EntryKind::Open,
            amount: *balance,
            balance_after: m.balance_after,
            time_ms: t,
            entry_day: local_day(t, self.cfg.parse.network_utc_offset_min) as i32,
            source: src,
            batch_row: out.ledger.len() as u32,
            trip: None,
        });
        push_status(out, m, card_text, t, src);
        Ok(true)
    }

    /// A `status` event: the card's status, and a status-list row if its listing changed.
    fn set_status(
        &mut self,
        card: CardId,
        status: CardStatus,
        t: i64,
        src: Source,
        out: &mut Batch,
    ) -> Result<bool, RejectReason> {
        let change = self.accounts.set_status(card, status).ok_or(RejectReason::UnknownCard)?;
        if let Some(c) = change {
            let mut card_buf = [0u8; CARD_ID_DIGITS_MAX];
            let card_text = out.push_text(card.write_to(&mut card_buf));
            out.status.push(StatusRow {
                card_id: card_text,
                listed: c.listed,
                reason: c.reason,
                time_ms: t,
                source: src,
            });
        }
        Ok(true)
    }

    /// The card's account, for the API and tests.
    pub fn card(&self, card: CardId) -> Option<&crate::accounts::Account> {
        self.accounts.get(card)
    }

    /// Appends the whole state (dedup set and accounts) to `out`.
    pub fn write_state(&self, out: &mut Vec<u8>) {
        self.dedup.write_to(out);
        self.event_dedup.write_to(out);
        self.accounts.write_to(out);
    }

    /// Restores a state written by [`write_state`](Self::write_state).
    pub fn read_state(cfg: EngineConfig, bytes: &[u8]) -> Result<Engine, StateError> {
        let mut r = Reader::new(bytes);
        let mut dedup = DedupSet::read_from(&mut r)?;
        dedup.reserve(cfg.dedup_expected_ids.saturating_sub(dedup.len()));
        let event_dedup = DedupSet::read_from(&mut r)?;
        let accounts = Accounts::read_from(&mut r)?;
        if r.remaining() != 0 {
            return Err(StateError::Corrupt("trailing bytes after the state"));
        }
        Ok(Engine {
            cfg,
            dedup,
            event_dedup,
            accounts,
            splits: Vec::with_capacity(8),
            tariff_texts: TariffTexts::default(),
            clock_ms: NO_CLOCK_MS,
            late_policy: LatePolicy::Park,
        })
    }
}

/// What debiting a settled record did: the card's text in the batch (empty for CPC) and its
/// account's movement (none for CPC).
struct Debit {
    card_text: Text,
    movement: Option<Movement>,
}

/// A duplicate trade: counted and recorded, no other effect (contract §3).
fn duplicate(out: &mut Batch, tx: &LaneTx<'_>, src: Source) {
    out.counts.lane_duplicates += 1;
    let id = out.push_text(&tx.trade_id);
    out.duplicates.push(DuplicateRow { id, kind: "trade", source: src, time_ms: tx.trans_time_ms });
}

/// The `detail` of an `unknown_card` reject: the price, so the arrears can be recovered (追缴)
/// once the card is known. JSON through serde, so any tariff version name stays valid JSON.
fn unknown_card_detail(card: CardId, priced: &Priced, version: &TariffVersion) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Detail<'a> {
        card_id: &'a str,
        pay_fee: i64,
        discount_fee: i64,
        fee: i64,
        tariff_version: &'a str,
    }
    let mut digits = [0u8; CARD_ID_DIGITS_MAX];
    let detail = Detail {
        card_id: card.write_to(&mut digits),
        pay_fee: priced.pay_fee,
        discount_fee: priced.discount_fee,
        fee: priced.fee,
        tariff_version: &version.version,
    };
    serde_json::to_string(&detail).expect("a struct of strings and integers serialises")
}

fn push_status(out: &mut Batch, m: Movement, card: Text, time_ms: i64, source: Source) {
    if let Some(c) = m.change {
        out.status.push(StatusRow {
            card_id: card,
            listed: c.listed,
            reason: c.reason,
            time_ms,
            source,
        });
    }
}

fn reject(
    out: &mut Batch,
    source: Source,
    reason: RejectReason,
    raw: &[u8],
    detail: Option<&str>,
    time_ms: i64,
) {
    let detail = match (detail, reason.field()) {
        (Some(d), _) => out.push_text(d),
        (None, Some(f)) => out.push_text(f.name()),
        (None, None) => match reason {
            RejectReason::NotJson { at } => out.push_fmt(format_args!("at byte {at}")),
            _ => Text::EMPTY,
        },
    };
    let raw = out.push_raw(raw);
    out.rejects.push(RejectRow { source, reason: reason.code(), detail, raw, time_ms });
}
