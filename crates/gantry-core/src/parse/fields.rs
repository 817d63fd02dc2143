//! The field rules of contract §1: what each field of a lane record or an account event
//! must be (required, length, range, enumeration), applied to the slots a walk filled.

use super::*;

pub(super) fn record_err(r: RejectReason) -> ObjError {
    ObjError::Record(r)
}

/// Checks a text field's length in characters.
#[inline]
pub(super) fn check_chars(s: &str, field: Field, min: usize, max: usize) -> ObjResult<()> {
    // Byte length bounds the char count from above, so short text needs no counting.
    if s.len() >= min && s.len() <= max {
        return Ok(());
    }
    let n = s.chars().count();
    if s.is_empty() || n < min || n > max {
        return Err(record_err(RejectReason::OutOfRange(field)));
    }
    Ok(())
}

#[inline]
pub(super) fn check_opt_text(s: &Option<Cow<'_, str>>, field: Field) -> ObjResult<()> {
    match s {
        Some(s) if s.len() > TEXT_FIELD_BYTES_MAX => {
            Err(record_err(RejectReason::OutOfRange(field)))
        }
        _ => Ok(()),
    }
}

#[inline]
pub(super) fn in_range(v: i64, field: Field, lo: i64, hi: i64) -> ObjResult<i64> {
    if v < lo || v > hi {
        Err(record_err(RejectReason::OutOfRange(field)))
    } else {
        Ok(v)
    }
}

#[inline]
pub(super) fn required<T>(v: Option<T>, field: Field) -> ObjResult<T> {
    v.ok_or(record_err(RejectReason::MissingField(field)))
}

/// `tradeId`, `topupId` and `adjustId`: 1–40 characters (contract §1).
pub const EVENT_ID_CHARS_MAX: usize = 40;
/// `gantryId`: 1–32 characters (contract §1).
pub const GANTRY_ID_CHARS_MAX: usize = 32;
/// `customerId`: the contract gives no length; 64 is far above any issuer's ids and keeps a
/// broken producer from filling the customer directory with megabytes.
pub const CUSTOMER_ID_CHARS_MAX: usize = 64;
/// `axleCount`: 2–20 (contract §1).
pub const AXLES_MIN: i64 = 2;
pub const AXLES_MAX: i64 = 20;
/// `vehicleSeat`: no vehicle has more (the field only decides holiday free passage).
pub const SEATS_MAX: i64 = 999;
/// Card types of an `open` event (contract §1.2).
const CARD_TYPE_STORED_VALUE: i64 = 22;
const CARD_TYPE_POSTPAID: i64 = 23;

pub(super) fn parse_lane_object<'a>(
    c: &mut Cursor<'a>,
    cfg: &ParseConfig,
) -> ObjResult<LaneTx<'a>> {
    let (strs, ints) = scan_fields::<8, 6, 14>(c, &LANE_KEYS)?;
    let [trade_id, gantry_id, interval, trans_time, card, obu, plate, pass] = strs;
    let [media, vtype, vclass, axles, seats, fee] = ints;

    use Field::*;
    let trade_id = required(trade_id, TradeId)?;
    check_chars(&trade_id, TradeId, 1, EVENT_ID_CHARS_MAX)?;
    let gantry_id = required(gantry_id, GantryId)?;
    check_chars(&gantry_id, GantryId, 1, GANTRY_ID_CHARS_MAX)?;
    let toll_interval_id = required(interval, TollIntervalId)?;
    let unit_count = unit_count(&toll_interval_id)?;
    let trans_time = required(trans_time, TransTime)?;
    let trans_time_ms = parse_timestamp_ms(&trans_time, cfg.network_utc_offset_min)
        .ok_or(record_err(RejectReason::OutOfRange(TransTime)))?;
    let (media_type, card_id) = media_and_card(media, &card)?;
    check_opt_text(&obu, ObuId)?;
    check_opt_text(&plate, VehiclePlate)?;
    check_opt_text(&pass, PassId)?;
    let vehicle_type = vehicle_type(vtype)?;
    let vehicle_class = in_range(vclass.unwrap_or(0), VehicleClass, 0, u8::MAX as i64)? as u8;
    let optional =
        |v: Option<i64>, field, lo, hi| v.map(|v| in_range(v, field, lo, hi)).transpose();
    let axle_count = optional(axles, AxleCount, AXLES_MIN, AXLES_MAX)?.map(|a| a as u8);
    let vehicle_seat = optional(seats, VehicleSeat, 0, SEATS_MAX)?.map(|s| s as u16);
    let lane_fee = optional(fee, Fee, 0, AMOUNT_ABS_MAX_FEN)?;
    Ok(LaneTx {
        trade_id,
        gantry_id,
        toll_interval_id,
        unit_count,
        trans_time_ms,
        media_type,
        card_id,
        card_text: card,
        obu_id: obu,
        vehicle_plate: plate,
        vehicle_type,
        vehicle_class,
        axle_count,
        vehicle_seat,
        pass_id: pass,
        lane_fee,
    })
}

/// The number of tolling units in `tollIntervalId`: each 1–[`UNIT_ID_BYTES_MAX`] bytes, at
/// most [`UNITS_PER_RECORD_MAX`] of them.
#[inline(always)]
fn unit_count(toll_interval_id: &str) -> ObjResult<u8> {
    let out_of_range = || record_err(RejectReason::OutOfRange(Field::TollIntervalId));
    let unit_ok = |u: &str| !u.is_empty() && u.len() <= UNIT_ID_BYTES_MAX;
    match crate::record::find_pipe(toll_interval_id.as_bytes()) {
        // One unit: nearly every record.
        None if unit_ok(toll_interval_id) => Ok(1),
        None => Err(out_of_range()),
        Some(_) => {
            let mut n = 0;
            for u in crate::record::Intervals::new(toll_interval_id) {
                n += 1;
                if !unit_ok(u) || n > UNITS_PER_RECORD_MAX {
                    return Err(out_of_range());
                }
            }
            Ok(n as u8)
        }
    }
}

/// `mediaType` and the card it requires: an ETC record (1) must name its `cpuCardId`; a CPC
/// record (2) may.
#[inline(always)]
fn media_and_card(
    media: Option<i64>,
    card: &Option<Cow<'_, str>>,
) -> ObjResult<(crate::record::MediaType, Option<crate::record::CardId>)> {
    use crate::record::MediaType;
    let media_type = match required(media, Field::MediaType)? {
        1 => MediaType::Etc,
        2 => MediaType::Cpc,
        _ => return Err(record_err(RejectReason::OutOfRange(Field::MediaType))),
    };
    let card_id = match card {
        Some(s) => Some(
            crate::record::CardId::parse(s)
                .ok_or(record_err(RejectReason::OutOfRange(Field::CpuCardId)))?,
        ),
        None if media_type == MediaType::Etc => {
            return Err(record_err(RejectReason::MissingField(Field::CpuCardId)))
        }
        None => None,
    };
    Ok((media_type, card_id))
}

/// `vehicleType`: required, one of the classes of JT/T 489-2019.
#[inline(always)]
fn vehicle_type(v: Option<i64>) -> ObjResult<u8> {
    let v = required(v, Field::VehicleType)?;
    match u8::try_from(v) {
        Ok(t) if crate::record::vehicle_type_index(t).is_some() => Ok(t),
        _ => Err(record_err(RejectReason::OutOfRange(Field::VehicleType))),
    }
}

pub(super) fn parse_account_object<'a>(
    c: &mut Cursor<'a>,
    cfg: &ParseConfig,
) -> ObjResult<AccountEvent<'a>> {
    let (strs, ints) = scan_fields::<11, 5, 16>(c, &EVENT_KEYS)?;
    let [typ, card, time, customer, plate, topup_id, channel, adjust_id, reason, trade_id, status] =
        strs;
    let [card_type, vtype, balance, credit, amount] = ints;

    use Field::*;
    let typ = required(typ, Type)?;
    let card = required(card, CardId)?;
    let card_id =
        crate::record::CardId::parse(&card).ok_or(record_err(RejectReason::OutOfRange(CardId)))?;
    let time = required(time, Time)?;
    let time_ms = parse_timestamp_ms(&time, cfg.network_utc_offset_min)
        .ok_or(record_err(RejectReason::OutOfRange(Time)))?;
    let kind = match &*typ {
        "open" => open_event(customer, card_type, vtype, plate, balance, credit)?,
        "topup" => {
            let topup_id = event_id(topup_id, TopupId)?;
            let amount = in_range(required(amount, Amount)?, Amount, 1, AMOUNT_ABS_MAX_FEN)?;
            check_opt_text(&channel, Channel)?;
            AccountEventKind::Topup { topup_id, amount, channel }
        }
        "adjust" => {
            let adjust_id = event_id(adjust_id, AdjustId)?;
            let amount = required(amount, Amount)?;
            let amount = in_range(amount, Amount, -AMOUNT_ABS_MAX_FEN, AMOUNT_ABS_MAX_FEN)?;
            let reason = required(reason, Reason)?;
            check_opt_text(&Some(reason.clone()), Reason)?;
            if let Some(t) = &trade_id {
                check_chars(t, TradeId, 1, EVENT_ID_CHARS_MAX)?;
            }
            AccountEventKind::Adjust { adjust_id, amount, reason, trade_id }
        }
        "status" => AccountEventKind::Status { status: card_status(status)? },
        _ => return Err(record_err(RejectReason::UnknownEventType)),
    };
    Ok(AccountEvent { card_id, time_ms, kind })
}

/// A money event's own id (`topupId`, `adjustId`): required, 1–40 characters.
#[inline]
fn event_id<'a>(id: Option<Cow<'a, str>>, field: Field) -> ObjResult<Cow<'a, str>> {
    let id = required(id, field)?;
    check_chars(&id, field, 1, EVENT_ID_CHARS_MAX)?;
    Ok(id)
}

/// The fields of an `open` event.
fn open_event<'a>(
    customer: Option<Cow<'a, str>>,
    card_type: Option<i64>,
    vtype: Option<i64>,
    plate: Option<Cow<'a, str>>,
    balance: Option<i64>,
    credit: Option<i64>,
) -> ObjResult<AccountEventKind<'a>> {
    use crate::record::CardType;
    use Field::*;
    let customer_id = required(customer, CustomerId)?;
    check_chars(&customer_id, CustomerId, 1, CUSTOMER_ID_CHARS_MAX)?;
    let card_type = match required(card_type, Field::CardType)? {
        CARD_TYPE_STORED_VALUE => CardType::StoredValue,
        CARD_TYPE_POSTPAID => CardType::Postpaid,
        _ => return Err(record_err(RejectReason::OutOfRange(Field::CardType))),
    };
    let vehicle_type = vehicle_type(vtype)?;
    check_opt_text(&plate, Plate)?;
    let balance = in_range(balance.unwrap_or(0), Balance, -AMOUNT_ABS_MAX_FEN, AMOUNT_ABS_MAX_FEN)?;
    // The account keeps the credit limit in 32 bits: 21 million yuan is far above any
    // postpaid ETC limit.
    let credit_limit = match card_type {
        CardType::Postpaid => in_range(credit.unwrap_or(0), CreditLimit, 0, i32::MAX as i64)?,
        CardType::StoredValue => 0,
    };
    Ok(AccountEventKind::Open {
        customer_id,
        card_type,
        vehicle_type,
        plate,
        balance,
        credit_limit,
    })
}

/// A `status` event's status.
#[inline]
fn card_status(status: Option<Cow<'_, str>>) -> ObjResult<CardStatus> {
    Ok(match &*required(status, Field::Status)? {
        "active" => CardStatus::Active,
        "lost" => CardStatus::Lost,
        "suspended" => CardStatus::Suspended,
        "cancelled" => CardStatus::Cancelled,
        _ => return Err(record_err(RejectReason::OutOfRange(Field::Status))),
    })
}
