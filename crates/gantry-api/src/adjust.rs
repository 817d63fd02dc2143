//! Disputes (`POST /v1/adjustments`, `gantry adjust`): a refund of a disputed charge,
//! published as an `adjust` account event (contract §1.2) so that it flows through the same
//! engine and ledger as everything else and shows in the statement.
//!
//! Rules, checked before anything is published:
//! - the trade is a settled debit of that card, and the amount is a refund (> 0) no larger
//!   than the trade's fee less what was refunded on it before (`api_adjustments`, the
//!   register of disputes settled here);
//! - the same `adjustId` again with the same content is answered as accepted and not
//!   published again; with other content it is a conflict (409).
//!
//! Order: publish, then register. A crash in between leaves a published event without its
//! register row; the client's retry (same `adjustId`) publishes it again and the engine
//! applies it once (it deduplicates `adjustId`), then the register row is written. One
//! server checks and publishes one adjustment at a time (a lock), so two concurrent refunds
//! of one trade cannot both pass the fee check; several `gantry serve` processes would
//! need the check in one place (not done: run adjustments through one of them).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::audit::Subject;
use crate::auth::Crm;
use crate::db::{self, sql, Db};
use crate::error::ApiError;
use crate::params::Body;
use crate::AppState;

/// How long a publish may wait for the broker's acknowledgement before the request fails
/// (503; the client retries with the same `adjustId`).
const PUBLISH_TIMEOUT_MS: u64 = 10_000;
/// Longest `adjustId` (as a `tradeId`: contract §1.1).
const ADJUST_ID_CHARS_MAX: usize = 40;
/// Longest reason code.
const REASON_CHARS_MAX: usize = 32;

/// The body of `POST /v1/adjustments` (contract §5).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// The adjustment's own id: the same id twice is applied once.
    pub adjust_id: String,
    pub card_id: String,
    /// The refund, fen (> 0, at most the trade's fee less earlier refunds).
    pub amount: i64,
    /// Reason code, `[a-z0-9_]`, e.g. `double_read`, `wrong_class`, `goodwill`.
    pub reason: String,
    /// The disputed trade.
    pub trade_id: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentAccepted {
    pub adjust_id: String,
    /// `published` (now), or `already_accepted` (this adjustId was accepted before).
    pub status: String,
    pub card_id: String,
    pub trade_id: String,
    pub amount: i64,
    /// The trade's fee and what is left to refund on it after this adjustment.
    pub trade_fee: i64,
    pub refundable_after: i64,
}

/// Checks and publishes adjustments: what the endpoint and `gantry adjust` share.
pub struct Adjuster {
    db: Db,
    producer: FutureProducer,
    topic: String,
    offset_min: i32,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Adjuster {
    pub fn new(
        db: Db,
        brokers: &str,
        topic: &str,
        offset_min: i32,
    ) -> Result<Adjuster, rdkafka::error::KafkaError> {
        let producer = gantry_kafka::producer_config(brokers).set("linger.ms", "0").create()?;
        Ok(Adjuster {
            db,
            producer,
            topic: topic.into(),
            offset_min,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks `req` and publishes it; `key_id` is who asked (the register keeps it).
    pub async fn adjust(
        &self,
        req: &AdjustmentRequest,
        key_id: &str,
    ) -> Result<AdjustmentAccepted, ApiError> {
        check_shape(req)?;
        let _one = self.one_at_a_time.lock().await;
        let customer = self.customer_of(&req.card_id).await?;
        let trade_fee = self.trade_fee(&customer, req).await?;
        let refunded: Vec<i64> =
            self.db.query(sql::ADJUSTED).bind(&req.trade_id).fetch_all().await?;
        let refunded = refunded.first().copied().unwrap_or(0);
        let record = db::AdjustmentRecord {
            adjust_id: req.adjust_id.clone(),
            card_id: req.card_id.clone(),
            trade_id: req.trade_id.clone(),
            amount: req.amount,
            reason: req.reason.clone(),
        };
        let accepted = |status: &str, refunded_now: i64| AdjustmentAccepted {
            adjust_id: req.adjust_id.clone(),
            status: status.into(),
            card_id: req.card_id.clone(),
            trade_id: req.trade_id.clone(),
            amount: req.amount,
            trade_fee,
            refundable_after: trade_fee - refunded_now,
        };
        let before: Vec<db::AdjustmentRecord> =
            self.db.query(sql::ADJUSTMENT).bind(&req.adjust_id).fetch_all().await?;
        if let Some(b) = before.first() {
            return if *b == record {
                Ok(accepted("already_accepted", refunded))
            } else {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "adjust_id_conflict",
                    format!("adjustId `{}` was accepted before with other content", req.adjust_id),
                ))
            };
        }
        if refunded + req.amount > trade_fee {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "exceeds_fee",
                format!("trade `{}` was charged {trade_fee} fen and {refunded} were refunded: at most {} more", req.trade_id, trade_fee - refunded),
            ));
        }
        self.publish(req).await?;
        self.register(&record, key_id).await?;
        Ok(accepted("published", refunded + req.amount))
    }

    async fn customer_of(&self, card: &str) -> Result<String, ApiError> {
        let owner: Vec<String> = self.db.query(sql::CARD_OWNER).bind(card).fetch_all().await?;
        owner
            .into_iter()
            .next()
            .ok_or_else(|| refused("unknown_card", format!("card `{card}` was never opened")))
    }

    /// The fee the card was debited for the trade.
    async fn trade_fee(&self, customer: &str, req: &AdjustmentRequest) -> Result<i64, ApiError> {
        let e: Vec<db::LedgerEntry> = self
            .db
            .query(sql::LEDGER_ENTRY)
            .bind(customer)
            .bind(&req.card_id)
            .bind(&req.trade_id)
            .fetch_all()
            .await?;
        match e.first() {
            Some(e) if e.kind == "debit" => Ok(-e.amount),
            _ => Err(refused(
                "unknown_trade",
                format!(
                    "trade `{}` is not a settled charge of card `{}`",
                    req.trade_id, req.card_id
                ),
            )),
        }
    }

    async fn publish(&self, req: &AdjustmentRequest) -> Result<(), ApiError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let event = serde_json::json!({
            "type": "adjust",
            "cardId": req.card_id,
            "time": gantry_core::time::format_timestamp(now_ms, self.offset_min),
            "adjustId": req.adjust_id,
            "amount": req.amount,
            "reason": req.reason,
            "tradeId": req.trade_id,
        })
        .to_string();
        let record =
            FutureRecord::to(&self.topic).key(&req.card_id).payload(&event).timestamp(now_ms);
        self.producer.send(record, Duration::from_millis(PUBLISH_TIMEOUT_MS)).await.map_err(
            |(e, _)| {
                tracing::warn!(error = %e, adjust_id = %req.adjust_id, "adjustment not published");
                ApiError::unavailable(
                    "broker_unavailable",
                    "the adjustment could not be published; retry with the same adjustId",
                )
            },
        )?;
        Ok(())
    }

    async fn register(&self, r: &db::AdjustmentRecord, key_id: &str) -> Result<(), ApiError> {
        #[derive(clickhouse::Row, Serialize)]
        struct Row<'a> {
            adjust_id: &'a str,
            card_id: &'a str,
            trade_id: &'a str,
            amount: i64,
            reason: &'a str,
            key_id: &'a str,
            published_at: u32,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let row = Row {
            adjust_id: &r.adjust_id,
            card_id: &r.card_id,
            trade_id: &r.trade_id,
            amount: r.amount,
            reason: &r.reason,
            key_id,
            published_at: now,
        };
        let mut ins = self.db.client().insert::<Row>("api_adjustments").await?;
        ins.write(&row).await?;
        ins.end().await?;
        Ok(())
    }
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn check_shape(r: &AdjustmentRequest) -> Result<(), ApiError> {
    if r.adjust_id.is_empty() || r.adjust_id.chars().count() > ADJUST_ID_CHARS_MAX {
        return Err(ApiError::bad(
            "bad_adjust_id",
            format!("adjustId is 1–{ADJUST_ID_CHARS_MAX} characters"),
        ));
    }
    if r.card_id.is_empty()
        || r.card_id.len() > 20
        || !r.card_id.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ApiError::bad("bad_card", "cardId is up to 20 digits"));
    }
    if r.trade_id.is_empty() || r.trade_id.chars().count() > 40 {
        return Err(ApiError::bad("bad_trade_id", "tradeId is 1–40 characters"));
    }
    if r.amount <= 0 {
        return Err(ApiError::bad("bad_amount", "amount is the refund in fen, > 0"));
    }
    let code_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    if r.reason.is_empty() || r.reason.len() > REASON_CHARS_MAX || !r.reason.bytes().all(code_ok) {
        return Err(ApiError::bad(
            "bad_reason",
            format!("reason is a code of 1–{REASON_CHARS_MAX} characters [a-z0-9_]"),
        ));
    }
    Ok(())
}

/// Settles a dispute: refunds (part of) a trade's fee to its card.
#[utoipa::path(post, path = "/v1/adjustments", tag = "crm", request_body = AdjustmentRequest, security(("bearer" = [])),
    responses((status = 202, body = AdjustmentAccepted, description = "published (or accepted before: same adjustId)"),
        (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "unknown card or trade, or beyond the trade's fee"),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn post_adjustment(
    State(s): State<AppState>,
    Crm(caller): Crm,
    Body(req): Body<AdjustmentRequest>,
) -> Result<Response, ApiError> {
    let adjuster: &Arc<Adjuster> = s
        .adjuster
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("broker_unavailable", "no Kafka producer"))?;
    let done = adjuster.adjust(&req, &caller.key_id).await?;
    let mut r = (StatusCode::ACCEPTED, axum::Json(done)).into_response();
    r.extensions_mut().insert(Subject {
        card_id: req.card_id,
        personal: true,
        ..Default::default()
    });
    Ok(r)
}
