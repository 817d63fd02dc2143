//! Pricing of one lane transaction, exactly as contract §2, in integer fen.
//!
//! `round(x)` is half-up to a whole fen; every amount here is non-negative, so it is
//! `(n + d/2) / d` in integers. The per-unit fees (`fee_i`) are what each unit's owner is
//! owed and always add up to the record's fee.

use crate::record::{vehicle_type_index, LaneTx, MediaType};
use crate::reject::RejectReason;
use crate::tariff::TariffVersion;
use crate::time::local_minute_of_day;

/// `flags` bits on a settlement.
pub mod flags {
    /// The lane's own `fee` differs from Gantry's.
    pub const LANE_FEE_MISMATCH: u32 = 1 << 0;
    /// Free passage for an exempt `vehicleClass`.
    pub const EXEMPT: u32 = 1 << 1;
    /// Free passage in a `holiday_free` window.
    pub const HOLIDAY_FREE: u32 = 1 << 2;
    /// A `time_discount` rule applied to at least one unit.
    pub const TIME_DISCOUNT: u32 = 1 << 3;
    /// The record charged more than one unit.
    pub const MULTI_UNIT: u32 = 1 << 4;
    /// Truck or special vehicle above 6 axles: axle surcharge applied.
    pub const AXLE_SURCHARGE: u32 = 1 << 5;
    /// The card was on the status list when it passed (set by the ledger).
    pub const CARD_LISTED: u32 = 1 << 6;
    /// The debit left the card below zero (set by the ledger).
    pub const ARREARS: u32 = 1 << 7;
}

/// What one unit's owner is owed for a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Index of the unit in the version ([`TariffVersion::unit`]).
    pub unit: u32,
    /// Where the unit's id is in the record's `tollIntervalId` (byte offset and length), so
    /// a row can refer to the record's own text instead of the tariff's copy of the id.
    pub id_at: u16,
    pub id_len: u16,
    /// `base_i`: the unit's fee before discounts (with any axle surcharge).
    pub pay_fee: i64,
    /// `fee_i`.
    pub fee: i64,
}

/// The price of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priced {
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub flags: u32,
}

#[inline]
fn round_bp(amount: i64, bp: u64) -> i64 {
    debug_assert!(amount >= 0);
    ((amount as u64 * bp + 5_000) / 10_000) as i64
}

/// Prices `tx` with `v` (the version in force at its `transTime`), appending one [`Split`]
/// per unit to `splits`. On a reject nothing is left appended.
pub fn price(
    tx: &LaneTx<'_>,
    v: &TariffVersion,
    network_utc_offset_min: i32,
    splits: &mut Vec<Split>,
) -> Result<Priced, RejectReason> {
    price_known_unit(tx, v, network_utc_offset_min, splits, None)
}

/// [`price`], given the index in `v` of a one-unit record's unit if the caller already
/// looked it up (`None`: look it up here).
#[inline]
pub fn price_known_unit(
    tx: &LaneTx<'_>,
    v: &TariffVersion,
    network_utc_offset_min: i32,
    splits: &mut Vec<Split>,
    known_unit: Option<u32>,
) -> Result<Priced, RejectReason> {
    let first = splits.len();
    let class_bit = match vehicle_type_index(tx.vehicle_type) {
        Some(i) => 1u16 << i,
        None => return Err(RejectReason::UnknownVehicleType),
    };
    let surcharge_axles = v.surcharge_axles(tx.vehicle_type, tx.axle_count);
    let mut flags = if surcharge_axles > 0 { flags::AXLE_SURCHARGE } else { 0 };
    let known_unit = known_unit.filter(|_| tx.unit_count == 1);
    let pay_fee = match base_fees(tx, v, surcharge_axles, known_unit, splits) {
        Ok(p) => p,
        Err(reason) => {
            splits.truncate(first);
            return Err(reason);
        }
    };
    if splits.len() - first > 1 {
        flags |= flags::MULTI_UNIT;
    }
    flags |= free_passage(tx, v, class_bit);
    let free = flags & (flags::EXEMPT | flags::HOLIDAY_FREE) != 0;
    let minute = local_minute_of_day(tx.trans_time_ms, network_utc_offset_min);
    let mut fee = 0i64;
    for s in &mut splits[first..] {
        s.fee = if free { 0 } else { unit_fee(tx, v, s, class_bit, minute, &mut flags) };
        fee += s.fee;
    }
    debug_assert!(0 <= fee && fee <= pay_fee, "discounts never exceed the base fee");
    if tx.lane_fee.is_some_and(|lf| lf != fee) {
        flags |= flags::LANE_FEE_MISMATCH;
    }
    Ok(Priced { pay_fee, discount_fee: pay_fee - fee, fee, flags })
}

/// Steps 1–2: each unit's base fee (with any axle surcharge) as a split, and their sum, the
/// payFee. On a reject the caller drops the splits pushed so far.
#[inline(always)]
fn base_fees(
    tx: &LaneTx<'_>,
    v: &TariffVersion,
    surcharge_axles: u64,
    known_unit: Option<u32>,
    splits: &mut Vec<Split>,
) -> Result<i64, RejectReason> {
    let mut pay_fee = 0i64;
    let units_at = tx.toll_interval_id.as_ptr() as usize;
    for id in tx.intervals() {
        let idx = known_unit.or_else(|| v.unit_index(id)).ok_or(RejectReason::UnknownInterval)?;
        let mut base = v.unit(idx).fee(tx.vehicle_type).ok_or(RejectReason::UnknownVehicleType)?;
        if surcharge_axles > 0 {
            base += round_bp(base, surcharge_axles * v.per_extra_axle_bp as u64);
        }
        pay_fee += base;
        // Units are slices of `toll_interval_id`, at most 64 of at most 64 bytes (the parser's
        // limits), so offset and length fit a u16.
        let id_at = (id.as_ptr() as usize - units_at) as u16;
        splits.push(Split { unit: idx, id_at, id_len: id.len() as u16, pay_fee: base, fee: base });
    }
    Ok(pay_fee)
}

/// Step 3: the flag of a free passage (an exempt class, or a holiday window the vehicle
/// qualifies for), or 0.
#[inline(always)]
fn free_passage(tx: &LaneTx<'_>, v: &TariffVersion, class_bit: u16) -> u32 {
    if v.is_exempt_class(tx.vehicle_class) {
        flags::EXEMPT
    } else if v.holiday_free.iter().any(|h| h.frees(tx.trans_time_ms, class_bit, tx.vehicle_seat)) {
        flags::HOLIDAY_FREE
    } else {
        0
    }
}

/// Step 4 for one unit: `fee_i = base_i − t_i − e_i` (time discount first, then the ETC
/// discount on what is left, ETC records only).
#[inline(always)]
fn unit_fee(
    tx: &LaneTx<'_>,
    v: &TariffVersion,
    s: &Split,
    class_bit: u16,
    minute: u32,
    flags: &mut u32,
) -> i64 {
    let t = match v.time_discount_for(v.unit(s.unit), class_bit, minute) {
        Some(rule) => {
            *flags |= flags::TIME_DISCOUNT;
            round_bp(s.pay_fee, rule.discount_bp as u64)
        }
        None => 0,
    };
    let e = match tx.media_type {
        MediaType::Etc => round_bp(s.pay_fee - t, v.etc_discount_bp as u64),
        MediaType::Cpc => 0,
    };
    s.pay_fee - t - e
}
