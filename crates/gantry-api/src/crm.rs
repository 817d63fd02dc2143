//! CRM endpoints (role `crm`): usage by day, the monthly statement (月结单), value segments,
//! churn risk, card lookup. Every answer is about identifiable customers, so each is
//! audited as personal; plates are masked unless the key also has `pii`.
//!
//! A customer's cards are those opened for them (`open` in the ledger); every answer shows
//! each card and the customer's sum.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use gantry_core::time::format_date;
use serde::{Deserialize, Serialize};

use crate::audit::Subject;
use crate::auth::{Crm, Visibility};
use crate::db::{self, some_date, sql, Db};
use crate::error::ApiError;
use crate::params::{local_day_of, parse_date, parse_month, time_text, today, Q};
use crate::render::{reply, write_rows, Format, Tabular};
use crate::{pii, AppState};

/// Longest `from`–`to` range of a usage answer: a year and a day, one line per day and card.
const USAGE_RANGE_DAYS_MAX: i64 = 366;
/// Days a usage answer covers when `from` is not given.
const USAGE_DEFAULT_DAYS: i64 = 30;

/// The response's audit subject: a customer, personal, plates in clear or not.
fn with_subject(mut r: Response, customer: &str, card: &str, pii_shown: bool) -> Response {
    r.extensions_mut().insert(Subject {
        customer_id: customer.to_string(),
        card_id: card.to_string(),
        personal: true,
        pii_shown,
    });
    r
}

/// The distinct card ids of rows ordered by card.
fn card_ids<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut cards: Vec<String> = ids.cloned().collect();
    cards.dedup();
    cards
}

async fn cards_of(db: &Db, customer: &str) -> Result<Vec<String>, ApiError> {
    let cards: Vec<String> = db.lookup(sql::CUSTOMER_CARDS).bind(customer).fetch_all().await?;
    if cards.is_empty() {
        return Err(ApiError::not_found(
            "unknown_customer",
            format!("no card was opened for customer `{customer}`"),
        ));
    }
    Ok(cards)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (default: 30 days before `to`).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
}

/// A card's (or the customer's) day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct UsageDay {
    pub day: String,
    /// The card, or `""` on the customer's sum.
    pub card_id: String,
    pub trips: u64,
    pub fee: i64,
    pub discount_fee: i64,
    pub topups: u64,
    pub topup_amount: i64,
    /// Balance at the end of the day (the customer's: the sum of the cards').
    pub balance: i64,
}

/// The last settled passage of a card.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Passage {
    pub trade_id: String,
    pub time: String,
    pub gantry_id: String,
    pub toll_interval_id: String,
    pub fee: i64,
    /// Masked unless the key has the `pii` role.
    pub plate: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardUsage {
    pub card_id: String,
    pub balance: i64,
    pub last_passage: Option<Passage>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub customer_id: String,
    pub from: String,
    pub to: String,
    /// The customer's days (all cards summed), every day of the range.
    pub days: Vec<UsageDay>,
    /// Each card's days.
    pub card_days: Vec<UsageDay>,
    /// Each card now: balance and last passage.
    pub cards: Vec<CardUsage>,
    /// The range's sums (`balance`: now, all cards).
    pub total: UsageDay,
}

impl Tabular for Usage {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.card_days,
            &[
                "day",
                "card_id",
                "trips",
                "fee",
                "discount_fee",
                "topups",
                "topup_amount",
                "balance",
            ],
        )
    }
}

/// A customer's trips, fees, discounts, top-ups and balance by day, with each card's last
/// passage.
#[utoipa::path(get, path = "/v1/customers/{customerId}/usage", tag = "crm", params(("customerId" = String, Path), UsageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Usage, description = "JSON, or CSV (days per card)"), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn usage(
    State(s): State<AppState>,
    Crm(caller): Crm,
    headers: HeaderMap,
    Path(customer): Path<String>,
    Q(q): Q<UsageQuery>,
) -> Result<Response, ApiError> {
    let offset = s.cfg.network_utc_offset_min;
    let to = match &q.to {
        Some(t) => parse_date("to", t)?,
        None => today(offset),
    };
    let from = match &q.from {
        Some(f) => parse_date("from", f)?,
        None => to - (USAGE_DEFAULT_DAYS - 1),
    };
    if from > to || to - from >= USAGE_RANGE_DAYS_MAX {
        return Err(ApiError::bad(
            "bad_range",
            format!(
                "`from` must not be after `to`, and at most {USAGE_RANGE_DAYS_MAX} days before"
            ),
        ));
    }
    let (from_text, to_text) = (format_date(from), format_date(to));
    let (rows, ledger) = tokio::try_join!(
        s.db.lookup(sql::USAGE_DAYS)
            .bind(&customer)
            .bind(&from_text)
            .bind(&to_text)
            .fetch_all::<db::UsageDay>(),
        s.db.lookup(sql::CUSTOMER_LEDGER_DAYS)
            .bind(&customer)
            .bind(&to_text)
            .fetch_all::<db::LedgerDay>(),
    )?;
    // The cards opened by `to` are those with ledger days by then (the ledger is read by
    // card); only a customer with none needs its cards looked up (or is unknown).
    let cards = match card_ids(ledger.iter().map(|l| &l.card_id)) {
        cards if cards.is_empty() => cards_of(&s.db, &customer).await?,
        cards => cards,
    };
    let visibility = caller.sees_pii();
    let (card_days, days) = usage_days(&cards, from, to, &rows, &ledger);
    let mut card_now = Vec::new();
    for card in &cards {
        let last = ledger.iter().filter(|l| &l.card_id == card).max_by_key(|l| l.last_debit_time);
        let balance = ledger.iter().rfind(|l| &l.card_id == card).map_or(0, |l| l.balance);
        let last_passage = match last {
            Some(l) => last_passage(&s, &caller, LastTrip::from(l)).await?,
            None => None,
        };
        card_now.push(CardUsage { card_id: card.clone(), balance, last_passage });
    }
    let mut total = UsageDay::default();
    days.iter().for_each(|d| add_day(&mut total, d));
    total.balance = card_now.iter().map(|c| c.balance).sum();
    let body = Usage {
        customer_id: customer.clone(),
        from: from_text,
        to: to_text,
        days,
        card_days,
        cards: card_now,
        total,
    };
    let pii_shown =
        visibility == Visibility::Clear && body.cards.iter().any(|c| c.last_passage.is_some());
    Ok(with_subject(reply(Format::of(&headers), &body)?, &customer, "", pii_shown))
}

/// Every day of `[from, to]` per card (rows missing on a quiet day are zeros; the balance
/// carries over from the last day the card moved), and the customer's sum per day.
fn usage_days(
    cards: &[String],
    from: i64,
    to: i64,
    rows: &[db::UsageDay],
    ledger: &[db::LedgerDay],
) -> (Vec<UsageDay>, Vec<UsageDay>) {
    let mut card_days = Vec::new();
    let mut days: BTreeMap<i64, UsageDay> = BTreeMap::new();
    for card in cards {
        // The card's ledger days, oldest first (the query orders by card, then day).
        let moves: Vec<&db::LedgerDay> = ledger.iter().filter(|l| &l.card_id == card).collect();
        let mut m = 0;
        let mut balance = 0;
        // Balance on the eve of `from`.
        let from_text = format_date(from);
        while m < moves.len() && moves[m].day < from_text {
            balance = moves[m].balance;
            m += 1;
        }
        for day in from..=to {
            let text = format_date(day);
            if m < moves.len() && moves[m].day == text {
                balance = moves[m].balance;
                m += 1;
            }
            let mut d = UsageDay {
                day: text.clone(),
                card_id: card.clone(),
                balance,
                ..Default::default()
            };
            if let Some(r) = rows.iter().find(|r| r.day == text && &r.card_id == card) {
                d.trips = r.trips;
                d.fee = r.fee;
                d.discount_fee = r.discount_fee;
                d.topups = r.topups;
                d.topup_amount = r.topup_amount;
            }
            let sum =
                days.entry(day).or_insert_with(|| UsageDay { day: text, ..Default::default() });
            add_day(sum, &d);
            card_days.push(d);
        }
    }
    (card_days, days.into_values().collect())
}

fn add_day(sum: &mut UsageDay, d: &UsageDay) {
    sum.trips += d.trips;
    sum.fee += d.fee;
    sum.discount_fee += d.discount_fee;
    sum.topups += d.topups;
    sum.topup_amount += d.topup_amount;
    sum.balance += d.balance;
}

/// A card's last debit as its ledger rows give it.
struct LastTrip<'a> {
    trade_id: &'a str,
    /// 0: the card has no debit.
    time: u32,
    /// Empty on a ledger row from before it carried the trip.
    gantry_id: &'a str,
    units: &'a str,
    amount: i64,
    plate_enc: &'a str,
}

macro_rules! last_trip_from {
    ($t:ty) => {
        impl<'a> From<&'a $t> for LastTrip<'a> {
            fn from(r: &'a $t) -> LastTrip<'a> {
                LastTrip {
                    trade_id: &r.last_debit,
                    time: r.last_debit_time,
                    gantry_id: &r.last_gantry_id,
                    units: &r.last_units,
                    amount: r.last_amount,
                    plate_enc: &r.last_plate_enc,
                }
            }
        }
    };
}
last_trip_from!(db::CardState);
last_trip_from!(db::LedgerDay);

/// The passage of a card's last debit: from its ledger row, or (a row from before the
/// ledger carried trips) looked up in `settlements`.
async fn last_passage(
    s: &AppState,
    caller: &crate::auth::Caller,
    t: LastTrip<'_>,
) -> Result<Option<Passage>, ApiError> {
    let offset = s.cfg.network_utc_offset_min;
    match t.time {
        0 => Ok(None),
        time if !t.gantry_id.is_empty() => Ok(Some(Passage {
            trade_id: t.trade_id.to_string(),
            time: time_text(time, offset),
            gantry_id: t.gantry_id.to_string(),
            toll_interval_id: t.units.to_string(),
            fee: -t.amount,
            plate: pii::plate(t.plate_enc, s.shown(caller)),
        })),
        time => passage(&s.db, t.trade_id, time, offset, s.shown(caller)).await,
    }
}

/// A settled trade's passage, looked up by its key (`trade_date`, `trade_id`).
async fn passage(
    db: &Db,
    trade_id: &str,
    time: u32,
    offset: i32,
    v: pii::Shown<'_>,
) -> Result<Option<Passage>, ApiError> {
    let date = format_date(local_day_of(time, offset));
    let trips: Vec<db::Trip> = db.lookup(sql::TRADE).bind(&date).bind(trade_id).fetch_all().await?;
    Ok(trips.into_iter().next().map(|t| Passage {
        trade_id: t.trade_id,
        time: time_text(t.time, offset),
        gantry_id: t.gantry_id,
        toll_interval_id: t.toll_interval_id,
        fee: t.fee,
        plate: pii::plate(&t.plate_enc, v),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// `YYYY-MM`.
    pub month: String,
}

/// One line of a statement: a movement of the card's balance, in the order it was booked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementLine {
    pub card_id: String,
    /// When the movement was booked (its batch committed): what puts it in this month.
    pub booked_at: String,
    /// When it happened (a trip's `transTime`; a late upload is booked days after).
    pub time: String,
    /// `open`, `debit` (a trip), `topup` or `adjust`.
    pub kind: String,
    /// tradeId, topupId or adjustId.
    pub entry_id: String,
    pub gantry_id: String,
    /// The tolling units charged, `|`-separated.
    pub toll_interval_id: String,
    pub units: u32,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    /// The movement (signed: a trip is −fee), fen.
    pub amount: i64,
    pub balance_after: i64,
    /// Masked unless the key has the `pii` role.
    pub plate: String,
}

/// A statement's totals (of a card, or the customer's sum).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct StatementTotals {
    pub opening_balance: i64,
    pub trips: u64,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub topups: u64,
    pub topup_amount: i64,
    pub adjustments: u64,
    pub adjustment_amount: i64,
    /// Opening balances of cards opened this month.
    pub opened_amount: i64,
    /// Sum of every movement: closing − opening.
    pub net: i64,
    pub closing_balance: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardStatement {
    pub card_id: String,
    pub lines: Vec<StatementLine>,
    pub totals: StatementTotals,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statement {
    pub customer_id: String,
    pub month: String,
    pub cards: Vec<CardStatement>,
    pub totals: StatementTotals,
}

impl Tabular for Statement {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        let lines: Vec<&StatementLine> = self.cards.iter().flat_map(|c| &c.lines).collect();
        write_rows(
            w,
            &lines,
            &["card_id", "booked_at", "time", "kind", "entry_id", "amount", "balance_after"],
        )
    }
}

/// The monthly statement (月结单): per card, the opening balance, every trip, top-up and
/// adjustment booked in the month in order, the closing balance and totals; the totals
/// equal the ledger's movements exactly.
#[utoipa::path(get, path = "/v1/customers/{customerId}/statement", tag = "crm", params(("customerId" = String, Path), MonthQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Statement, description = "JSON, or CSV (the lines)"), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn statement(
    State(s): State<AppState>,
    Crm(caller): Crm,
    headers: HeaderMap,
    Path(customer): Path<String>,
    Q(q): Q<MonthQuery>,
) -> Result<Response, ApiError> {
    let (first, next) = parse_month(&q.month)?;
    let body = statement_of(&s, &customer, &q.month, (first, next), s.shown(&caller)).await?;
    let pii_shown = caller.sees_pii() == Visibility::Clear;
    Ok(with_subject(reply(Format::of(&headers), &body)?, &customer, "", pii_shown))
}

async fn statement_of(
    s: &AppState,
    customer: &str,
    month: &str,
    (first, next): (i64, i64),
    v: pii::Shown<'_>,
) -> Result<Statement, ApiError> {
    let offset = s.cfg.network_utc_offset_min;
    let (start, _) = crate::params::day_seconds(first, offset);
    let (end, _) = crate::params::day_seconds(next, offset);
    let entries: Vec<db::Entry> =
        s.db.lookup(sql::STATEMENT_LEDGER)
            .bind(customer)
            .bind(customer)
            .bind(end)
            .fetch_all()
            .await?;
    // The cards opened by the month's end are those with entries booked by then.
    let cards = match card_ids(entries.iter().map(|e| &e.card_id)) {
        cards if cards.is_empty() => cards_of(&s.db, customer).await?,
        cards => cards,
    };
    let trips = month_trips(&s.db, customer, &entries, start, offset).await?;
    let mut out = Statement {
        customer_id: customer.into(),
        month: month.into(),
        cards: vec![],
        totals: Default::default(),
    };
    for card in cards {
        let mine = entries.iter().filter(|e| e.card_id == card);
        let mut totals = StatementTotals::default();
        let mut lines = Vec::new();
        for e in mine {
            if e.booked < start {
                totals.opening_balance = e.balance_after;
                continue;
            }
            lines.push(line(e, &trips, offset, v, &mut totals));
        }
        totals.closing_balance = totals.opening_balance + totals.net;
        // The ledger is a chain: the last balance booked is the opening plus every movement.
        // A difference would be a broken chain, which Gantry's exactly-once rules out.
        if let Some(last) = lines.last() {
            debug_assert_eq!(
                last.balance_after, totals.closing_balance,
                "card {card}: ledger chain"
            );
        }
        add_totals(&mut out.totals, &totals);
        out.cards.push(CardStatement { card_id: card, lines, totals });
    }
    Ok(out)
}

/// The settlements of the trips booked from `start` on whose ledger rows predate the trip
/// columns (rows written since carry their trip), by trade id: read over the transaction
/// days they span (a late upload is booked in a later month than it happened).
async fn month_trips(
    db: &Db,
    customer: &str,
    entries: &[db::Entry],
    start: u32,
    offset: i32,
) -> Result<HashMap<String, db::Trip>, ApiError> {
    let debits = || {
        entries.iter().filter(|e| e.booked >= start && e.kind == "debit" && e.gantry_id.is_empty())
    };
    let (Some(lo), Some(hi)) = (debits().map(|e| e.time).min(), debits().map(|e| e.time).max())
    else {
        return Ok(HashMap::new());
    };
    let (lo, hi) = (format_date(local_day_of(lo, offset)), format_date(local_day_of(hi, offset)));
    let rows: Vec<db::Trip> =
        db.query(sql::STATEMENT_TRIPS).bind(customer).bind(&lo).bind(&hi).fetch_all().await?;
    Ok(rows.into_iter().map(|t| (t.trade_id.clone(), t)).collect())
}

fn line(
    e: &db::Entry,
    trips: &HashMap<String, db::Trip>,
    offset: i32,
    v: pii::Shown<'_>,
    t: &mut StatementTotals,
) -> StatementLine {
    let mut l = StatementLine {
        card_id: e.card_id.clone(),
        booked_at: time_text(e.booked, offset),
        time: time_text(e.time, offset),
        kind: e.kind.clone(),
        entry_id: e.entry_id.clone(),
        amount: e.amount,
        balance_after: e.balance_after,
        ..Default::default()
    };
    t.net += e.amount;
    match e.kind.as_str() {
        "debit" => {
            t.trips += 1;
            // The fee is what the ledger debited; the split into pay and discount comes
            // from the settlement.
            t.fee -= e.amount;
            l.fee = -e.amount;
            // The trip from the ledger row, or from `settlements` for a row from before the
            // ledger carried it.
            let trip = match e.gantry_id.is_empty() {
                false => Some((
                    &e.gantry_id,
                    &e.toll_interval_id,
                    e.pay_fee,
                    e.discount_fee,
                    &e.plate_enc,
                )),
                true => trips.get(&e.entry_id).map(|t| {
                    (&t.gantry_id, &t.toll_interval_id, t.pay_fee, t.discount_fee, &t.plate_enc)
                }),
            };
            if let Some((gantry, units, pay_fee, discount_fee, plate_enc)) = trip {
                l.gantry_id = gantry.clone();
                l.toll_interval_id = units.clone();
                l.units = units.split('|').count() as u32;
                l.pay_fee = pay_fee;
                l.discount_fee = discount_fee;
                l.plate = pii::plate(plate_enc, v);
                t.pay_fee += pay_fee;
                t.discount_fee += discount_fee;
            }
        }
        "topup" => {
            t.topups += 1;
            t.topup_amount += e.amount;
        }
        "adjust" => {
            t.adjustments += 1;
            t.adjustment_amount += e.amount;
        }
        _ => t.opened_amount += e.amount,
    }
    l
}

fn add_totals(sum: &mut StatementTotals, t: &StatementTotals) {
    sum.opening_balance += t.opening_balance;
    sum.trips += t.trips;
    sum.pay_fee += t.pay_fee;
    sum.discount_fee += t.discount_fee;
    sum.fee += t.fee;
    sum.topups += t.topups;
    sum.topup_amount += t.topup_amount;
    sum.adjustments += t.adjustments;
    sum.adjustment_amount += t.adjustment_amount;
    sum.opened_amount += t.opened_amount;
    sum.net += t.net;
    sum.closing_balance += t.closing_balance;
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The day the measures are taken at, `YYYY-MM-DD` (default: today).
    pub as_of: Option<String>,
    /// Only this tier (segments: `high`, `medium`, `low`, `dormant`).
    pub tier: Option<String>,
    /// Customers listed at most (default and ceiling: `list_rows_max`).
    pub limit: Option<usize>,
}

/// A customer's RFM measures and tier.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerValue {
    pub customer_id: String,
    pub tier: String,
    /// Days from the last trip to `as_of` (`null`: no trip in the window).
    pub recency_days: Option<i64>,
    pub trips: u64,
    /// Fees in the window, fen.
    pub spend: i64,
    /// Scores 1–3 each: recency, frequency, spend.
    pub score: [u8; 3],
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tier {
    pub tier: String,
    /// Customers in the tier (all, even beyond `limit`).
    pub customers: u64,
    pub list: Vec<CustomerValue>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Segments {
    pub as_of: String,
    pub window_days: u32,
    /// When the tiers were computed (they are kept for `population_refresh_ms`).
    pub computed_at: String,
    pub tiers: Vec<Tier>,
}

impl Tabular for Segments {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        #[derive(Serialize)]
        struct Row<'a> {
            customer_id: &'a str,
            tier: &'a str,
            recency_days: Option<i64>,
            trips: u64,
            spend: i64,
        }
        let rows: Vec<Row> = self
            .tiers
            .iter()
            .flat_map(|t| &t.list)
            .map(|c| Row {
                customer_id: &c.customer_id,
                tier: &c.tier,
                recency_days: c.recency_days,
                trips: c.trips,
                spend: c.spend,
            })
            .collect();
        write_rows(w, &rows, &["customer_id", "tier", "recency_days", "trips", "spend"])
    }
}

pub const TIERS: [&str; 4] = ["high", "medium", "low", "dormant"];

/// Value tiers by recency, frequency and spend, with the customers in each.
#[utoipa::path(get, path = "/v1/customers/segments", tag = "crm", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Segments, description = "JSON, or CSV (one line per customer)"), (status = 400, body = crate::error::ErrorBody)))]
pub async fn segments(
    State(s): State<AppState>,
    _: Crm,
    headers: HeaderMap,
    Q(q): Q<ListQuery>,
) -> Result<Response, ApiError> {
    let (as_of, limit) = list_params(&s, &q)?;
    if let Some(t) = q.tier.as_deref().filter(|t| !TIERS.contains(t)) {
        return Err(ApiError::bad("bad_tier", format!("`tier` is one of {TIERS:?}, not `{t}`")));
    }
    let cfg = &s.cfg.segments;
    let as_of_text = format_date(as_of);
    let (values, at) = s.segments.get(as_of, all_values(&s, as_of)).await?;
    let tiers = TIERS
        .iter()
        .zip(values.iter())
        .filter(|(t, _)| q.tier.as_deref().is_none_or(|want| want == **t))
        .map(|(t, all)| Tier {
            tier: t.to_string(),
            customers: all.len() as u64,
            list: all.iter().take(limit).cloned().collect(),
        })
        .collect();
    let computed_at = computed_at(at, s.cfg.network_utc_offset_min);
    let body = Segments { as_of: as_of_text, window_days: cfg.window_days, computed_at, tiers };
    Ok(with_subject(reply(Format::of(&headers), &body)?, "", "", false))
}

/// Every customer's value as of `as_of` (those with no trip in the window `dormant`), per
/// tier in [`TIERS`] order, by spend, highest first.
async fn all_values(s: &AppState, as_of: i64) -> Result<TierLists, ApiError> {
    let cfg = &s.cfg.segments;
    let as_of_text = format_date(as_of);
    let rows: Vec<db::Rfm> =
        s.db.query(sql::SEGMENTS)
            .bind(&as_of_text)
            .bind(cfg.window_days)
            .bind(&as_of_text)
            .fetch_all()
            .await?;
    let customers: Vec<String> = s.db.query(sql::CUSTOMERS).fetch_all().await?;
    let mut values: Vec<CustomerValue> = rows.iter().map(|r| value_of(r, as_of, cfg)).collect();
    let active: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.customer_id.as_str()).collect();
    for c in customers.iter().filter(|c| !active.contains(c.as_str())) {
        values.push(CustomerValue {
            customer_id: c.clone(),
            tier: "dormant".into(),
            recency_days: None,
            trips: 0,
            spend: 0,
            score: [0; 3],
        });
    }
    values.sort_by(|a, b| b.spend.cmp(&a.spend).then_with(|| a.customer_id.cmp(&b.customer_id)));
    let mut tiers: TierLists = Default::default();
    for v in values {
        let i = TIERS.iter().position(|t| *t == v.tier).expect("value_of gives a tier of TIERS");
        tiers[i].push(v);
    }
    Ok(tiers)
}

/// Each tier's customers, in [`TIERS`] order.
pub type TierLists = [Vec<CustomerValue>; 4];

/// When a kept answer was computed, as a network-local time.
fn computed_at(at: std::time::Instant, offset: i32) -> String {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time_text(now_s.saturating_sub(at.elapsed().as_secs()) as u32, offset)
}

fn list_params(s: &AppState, q: &ListQuery) -> Result<(i64, usize), ApiError> {
    let as_of = match &q.as_of {
        Some(d) => parse_date("as_of", d)?,
        None => today(s.cfg.network_utc_offset_min),
    };
    let max = s.cfg.list_rows_max;
    match q.limit {
        Some(0) => Err(ApiError::bad("bad_limit", "`limit` must be at least 1")),
        Some(l) if l > max => Err(ApiError::bad("bad_limit", format!("`limit` is at most {max}"))),
        l => Ok((as_of, l.unwrap_or(max))),
    }
}

/// Scores a customer's measures against the thresholds (pure).
pub fn value_of(r: &db::Rfm, as_of: i64, cfg: &crate::config::SegmentConfig) -> CustomerValue {
    let recency =
        some_date(&r.last_trip).and_then(|d| parse_date("last_trip", d).ok()).map(|d| as_of - d);
    let score3 = |hi: bool, mid: bool| {
        if hi {
            3
        } else if mid {
            2
        } else {
            1
        }
    };
    let rec = recency.unwrap_or(i64::MAX);
    let score = [
        score3(rec <= cfg.recency_days[0] as i64, rec <= cfg.recency_days[1] as i64),
        score3(r.trips >= cfg.trips[0], r.trips >= cfg.trips[1]),
        score3(r.spend >= cfg.spend_fen[0], r.spend >= cfg.spend_fen[1]),
    ];
    let sum: u8 = score.iter().sum();
    let tier = match sum {
        8.. => "high",
        6..=7 => "medium",
        _ => "low",
    };
    CustomerValue {
        customer_id: r.customer_id.clone(),
        tier: tier.into(),
        recency_days: recency,
        trips: r.trips,
        spend: r.spend,
        score,
    }
}

/// A customer at risk, with the evidence.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChurnRisk {
    pub customer_id: String,
    /// Trips in the last `recent_days`.
    pub recent_trips: u64,
    /// The customer's own baseline: trips per `recent_days` over the `baseline_days` before.
    pub baseline_trips: f64,
    /// recent / baseline (0: stopped travelling).
    pub ratio: f64,
    pub last_trip: Option<String>,
    pub last_topup: Option<String>,
    /// Days since the last top-up (`null`: never topped up, e.g. a postpaid card).
    pub days_since_topup: Option<i64>,
    /// Which rules flagged the customer: `usage_drop`, `no_topup`.
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChurnList {
    pub as_of: String,
    pub recent_days: u32,
    pub baseline_days: u32,
    /// When the list was computed (it is kept for `population_refresh_ms`).
    pub computed_at: String,
    /// Customers at risk (all, even beyond `limit`).
    pub customers: u64,
    pub list: Vec<ChurnRisk>,
}

impl Tabular for ChurnList {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        #[derive(Serialize)]
        struct Row<'a> {
            customer_id: &'a str,
            recent_trips: u64,
            baseline_trips: f64,
            ratio: f64,
            last_trip: &'a str,
            last_topup: &'a str,
            days_since_topup: Option<i64>,
            reasons: String,
        }
        let rows: Vec<Row> = self
            .list
            .iter()
            .map(|c| Row {
                customer_id: &c.customer_id,
                recent_trips: c.recent_trips,
                baseline_trips: c.baseline_trips,
                ratio: c.ratio,
                last_trip: c.last_trip.as_deref().unwrap_or(""),
                last_topup: c.last_topup.as_deref().unwrap_or(""),
                days_since_topup: c.days_since_topup,
                reasons: c.reasons.join("|"),
            })
            .collect();
        write_rows(
            w,
            &rows,
            &[
                "customer_id",
                "recent_trips",
                "baseline_trips",
                "ratio",
                "last_trip",
                "last_topup",
                "days_since_topup",
                "reasons",
            ],
        )
    }
}

/// Customers whose usage and top-ups are falling against their own baseline, with the
/// evidence, most at risk first.
#[utoipa::path(get, path = "/v1/customers/churn-risk", tag = "crm", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ChurnList, description = "JSON, or CSV"), (status = 400, body = crate::error::ErrorBody)))]
pub async fn churn_risk(
    State(s): State<AppState>,
    _: Crm,
    headers: HeaderMap,
    Q(q): Q<ListQuery>,
) -> Result<Response, ApiError> {
    let (as_of, limit) = list_params(&s, &q)?;
    let c = &s.cfg.churn;
    let a = format_date(as_of);
    let (all, at) = s.churn.get(as_of, all_risks(&s, as_of)).await?;
    let mut risks: Vec<ChurnRisk> = all.iter().take(limit).cloned().collect();
    let customers = all.len() as u64;
    risks.truncate(limit);
    let body = ChurnList {
        as_of: a,
        recent_days: c.recent_days,
        baseline_days: c.baseline_days,
        computed_at: computed_at(at, s.cfg.network_utc_offset_min),
        customers,
        list: risks,
    };
    Ok(with_subject(reply(Format::of(&headers), &body)?, "", "", false))
}

/// Every customer at risk as of `as_of`, most at risk first.
async fn all_risks(s: &AppState, as_of: i64) -> Result<Vec<ChurnRisk>, ApiError> {
    let c = &s.cfg.churn;
    let a = format_date(as_of);
    let rows: Vec<db::ChurnRow> =
        s.db.query(sql::CHURN)
            .bind(&a)
            .bind(c.recent_days)
            .bind(&a)
            .bind(c.recent_days)
            .bind(&a)
            .bind(c.recent_days + c.baseline_days)
            .bind(&a)
            .fetch_all()
            .await?;
    let mut risks: Vec<ChurnRisk> = rows.iter().filter_map(|r| churn_of(r, as_of, c)).collect();
    risks.sort_by(|x, y| {
        x.ratio
            .total_cmp(&y.ratio)
            .then_with(|| y.baseline_trips.total_cmp(&x.baseline_trips))
            .then_with(|| x.customer_id.cmp(&y.customer_id))
    });
    Ok(risks)
}

/// Applies the churn rules to one customer (pure).
pub fn churn_of(r: &db::ChurnRow, as_of: i64, c: &crate::config::ChurnConfig) -> Option<ChurnRisk> {
    let baseline = r.baseline as f64 * c.recent_days as f64 / c.baseline_days as f64;
    let ratio = if baseline > 0.0 { r.recent as f64 / baseline } else { 1.0 };
    let last_topup = some_date(&r.last_topup).map(str::to_string);
    let days_since_topup =
        last_topup.as_deref().and_then(|d| parse_date("last_topup", d).ok()).map(|d| as_of - d);
    let mut reasons = Vec::new();
    if baseline >= c.baseline_trips_min && ratio <= c.drop_ratio_max {
        reasons.push("usage_drop".to_string());
    }
    if days_since_topup.is_some_and(|d| d >= c.topup_silence_days as i64)
        && baseline > 0.0
        && (r.recent as f64) < baseline
    {
        reasons.push("no_topup".to_string());
    }
    (!reasons.is_empty()).then(|| ChurnRisk {
        customer_id: r.customer_id.clone(),
        recent_trips: r.recent,
        baseline_trips: (baseline * 100.0).round() / 100.0,
        ratio: (ratio * 1000.0).round() / 1000.0,
        last_trip: some_date(&r.last_trip).map(str::to_string),
        last_topup,
        days_since_topup,
        reasons,
    })
}

/// A card: balance, status, listing, last passage.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Card {
    pub card_id: String,
    pub customer_id: String,
    /// The first 4 digits: the issuer network.
    pub issuer_id: String,
    pub balance: i64,
    /// `active`, or `lost`, `suspended`, `cancelled` when the latest listing is for that.
    pub status: String,
    /// On the status list now.
    pub listed: bool,
    /// Why (or why it last came off): `insufficient_balance`, `overdrawn`, `lost`, …
    pub listing_reason: Option<String>,
    pub listing_since: Option<String>,
    pub ledger_entries: u64,
    pub last_passage: Option<Passage>,
}

impl Tabular for Card {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        w.write_record([
            "card_id",
            "customer_id",
            "issuer_id",
            "balance",
            "status",
            "listed",
            "listing_reason",
            "last_passage_time",
            "last_gantry_id",
        ])?;
        let p = self.last_passage.as_ref();
        w.write_record([
            self.card_id.as_str(),
            &self.customer_id,
            &self.issuer_id,
            &self.balance.to_string(),
            &self.status,
            if self.listed { "true" } else { "false" },
            self.listing_reason.as_deref().unwrap_or(""),
            p.map_or("", |p| p.time.as_str()),
            p.map_or("", |p| p.gantry_id.as_str()),
        ])
    }
}

/// Card lookup: balance, status, listing, last passage.
#[utoipa::path(get, path = "/v1/cards/{cardId}", tag = "crm", params(("cardId" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Card), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn card(
    State(s): State<AppState>,
    Crm(caller): Crm,
    headers: HeaderMap,
    Path(card_id): Path<String>,
) -> Result<Response, ApiError> {
    if card_id.is_empty() || card_id.len() > 20 || !card_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad("bad_card", "a card id is up to 20 digits"));
    }
    let offset = s.cfg.network_utc_offset_min;
    // One read of the card's rows in `card_activity`, by its key.
    let b: db::CardState = s.db.lookup(sql::CARD_STATE).bind(&card_id).fetch_one().await?;
    if b.customer_id.is_empty() {
        return Err(ApiError::not_found(
            "unknown_card",
            format!("card `{card_id}` was never opened"),
        ));
    }
    let customer = b.customer_id.clone();
    let visibility = caller.sees_pii();
    let last_passage = last_passage(&s, &caller, LastTrip::from(&b)).await?;
    let listing = (b.has_listing == 1).then_some((b.list_reason.clone(), b.listed_at));
    let listed = b.has_listing == 1 && b.listed == 1;
    let status = match listing.as_ref().map(|l| l.0.as_str()) {
        Some(r @ ("lost" | "suspended" | "cancelled")) if listed => r.to_string(),
        _ => "active".to_string(),
    };
    let body = Card {
        issuer_id: card_id.chars().take(4).collect(),
        card_id: card_id.clone(),
        customer_id: customer.clone(),
        balance: b.balance,
        status,
        listed,
        listing_reason: listing.as_ref().map(|l| l.0.clone()),
        listing_since: listing.as_ref().map(|l| time_text(l.1, offset)),
        ledger_entries: b.entries,
        last_passage,
    };
    let pii_shown = visibility == Visibility::Clear && body.last_passage.is_some();
    Ok(with_subject(reply(Format::of(&headers), &body)?, &customer, &card_id, pii_shown))
}

/// A card seen with a plate.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlateCard {
    pub card_id: String,
    pub customer_id: String,
    pub trips: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub last_gantry_id: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlateLookup {
    pub plate: String,
    /// Most recently seen first (at most 1,000).
    pub cards: Vec<PlateCard>,
}

impl Tabular for PlateLookup {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.cards,
            &["card_id", "customer_id", "trips", "first_seen", "last_seen", "last_gantry_id"],
        )
    }
}

/// The cards and customers a plate was seen with ("whose car is this?"), found by the
/// plate's keyed hash: nothing is decrypted to search. Needs `crm` and `pii`: a search by
/// plate is a location history.
#[utoipa::path(get, path = "/v1/plates/{plate}", tag = "crm", params(("plate" = String, Path, description = "e.g. 苏A12345_0")),
    security(("bearer" = [])),
    responses((status = 200, body = PlateLookup, description = "JSON, or CSV (the cards)"), (status = 403, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn plate(
    State(s): State<AppState>,
    Crm(caller): Crm,
    headers: HeaderMap,
    Path(plate): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(crate::auth::Role::Pii)?;
    if plate.is_empty() || plate.len() > gantry_pii::PLATE_BYTES_MAX {
        return Err(ApiError::bad("bad_plate", "a plate is 1–256 bytes"));
    }
    let keys = s
        .plates
        .as_deref()
        .ok_or_else(|| ApiError::unavailable("no_pii_keys", "the server has no PII key file"))?;
    let offset = s.cfg.network_utc_offset_min;
    let rows: Vec<db::PlateCard> =
        s.db.query(sql::PLATE_CARDS).bind(keys.lookup_hash(&plate)).fetch_all().await?;
    let cards = rows
        .into_iter()
        .map(|r| PlateCard {
            card_id: r.card_id,
            customer_id: r.customer_id,
            trips: r.trips,
            first_seen: time_text(r.first_seen, offset),
            last_seen: time_text(r.last_seen, offset),
            last_gantry_id: r.last_gantry_id,
        })
        .collect();
    let body = PlateLookup { plate, cards };
    let customer = body.cards.first().map_or(String::new(), |c| c.customer_id.clone());
    Ok(with_subject(reply(Format::of(&headers), &body)?, &customer, "", true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChurnConfig, SegmentConfig};

    fn rfm(last: &str, trips: u64, spend: i64) -> db::Rfm {
        db::Rfm { customer_id: "C".into(), last_trip: last.into(), trips, spend }
    }

    #[test]
    fn tiers_follow_the_scores() {
        let cfg = SegmentConfig::default();
        let as_of = parse_date("d", "2026-11-30").unwrap();
        let cases = [
            (rfm("2026-11-29", 60, 80_000), "high", [3, 3, 3]),
            (rfm("2026-11-10", 20, 20_000), "medium", [2, 2, 2]),
            (rfm("2026-11-25", 12, 5_000), "medium", [3, 2, 1]),
            (rfm("2026-09-15", 2, 900), "low", [1, 1, 1]),
        ];
        for (r, tier, score) in cases {
            let v = value_of(&r, as_of, &cfg);
            assert_eq!((v.tier.as_str(), v.score), (tier, score), "{r:?}");
        }
        assert_eq!(value_of(&rfm("2026-11-29", 60, 80_000), as_of, &cfg).recency_days, Some(1));
    }

    fn churn(recent: u64, baseline: u64, last_topup: &str) -> db::ChurnRow {
        db::ChurnRow {
            customer_id: "C".into(),
            recent,
            baseline,
            last_trip: "2026-11-20".into(),
            last_topup: last_topup.into(),
            topups: 1,
        }
    }

    #[test]
    fn churn_is_a_fall_against_the_customers_own_baseline() {
        let c = ChurnConfig::default();
        let as_of = parse_date("d", "2026-11-30").unwrap();
        // Baseline 90 trips over 90 days = 30 per 30 days.
        assert_eq!(
            churn_of(&churn(10, 90, "2026-11-20"), as_of, &c).unwrap().reasons,
            ["usage_drop"]
        );
        assert!(
            churn_of(&churn(25, 90, "2026-11-20"), as_of, &c).is_none(),
            "a small dip is not a risk"
        );
        assert!(
            churn_of(&churn(0, 6, "2026-11-20"), as_of, &c).is_none(),
            "2 trips a month is too few to judge"
        );
        assert_eq!(
            churn_of(&churn(20, 90, "2026-08-01"), as_of, &c).unwrap().reasons,
            ["no_topup"]
        );
        let both = churn_of(&churn(0, 90, "0000-00-00"), as_of, &c).unwrap();
        assert_eq!((both.reasons.len(), both.days_since_topup, both.ratio), (1, None, 0.0));
    }

    #[test]
    fn quiet_days_carry_the_balance_over() {
        let cards = vec!["1".to_string()];
        let from = parse_date("d", "2026-11-01").unwrap();
        let ledger = vec![
            db::LedgerDay {
                card_id: "1".into(),
                day: "2026-10-20".into(),
                balance: 500,
                last_debit_time: 0,
                last_debit: String::new(),
                last_gantry_id: String::new(),
                last_units: String::new(),
                last_amount: 0,
                last_plate_enc: String::new(),
            },
            db::LedgerDay {
                card_id: "1".into(),
                day: "2026-11-02".into(),
                balance: 300,
                last_debit_time: 0,
                last_debit: String::new(),
                last_gantry_id: String::new(),
                last_units: String::new(),
                last_amount: 0,
                last_plate_enc: String::new(),
            },
        ];
        let rows = vec![db::UsageDay {
            day: "2026-11-02".into(),
            card_id: "1".into(),
            trips: 1,
            fee: 200,
            discount_fee: 10,
            topups: 0,
            topup_amount: 0,
        }];
        let (card_days, days) = usage_days(&cards, from, from + 2, &rows, &ledger);
        let balances: Vec<i64> = card_days.iter().map(|d| d.balance).collect();
        assert_eq!(balances, [500, 300, 300]);
        assert_eq!((days.len(), days[1].trips, days[1].fee), (3, 1, 200));
    }
}
