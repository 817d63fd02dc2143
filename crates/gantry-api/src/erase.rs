//! The right to erasure (`gantry pii erase --customer C`, contract §5.2): a customer's
//! personal data is removed from every table that holds it, and no amount changes.
//!
//! What goes: in `settlements` the plate (sealed, its lookup hash, and the old clear
//! column), the OBU serial and the trip id of every row of the customer's; in `ledger` and
//! `card_activity` the sealed plate their debits repeat; in `rejects`
//! the raw bytes of every record that names one of the customer's cards. What stays:
//! amounts, card numbers, trade ids, the ledger and the rollups — billing records are kept
//! for audit (PIPL allows it; DOMAIN.md) — and the audit trail itself.
//!
//! ClickHouse applies `ALTER … UPDATE` as a mutation in the background; erasure waits
//! until none is pending and then checks that no such value is left.

use std::time::Duration;

use crate::db::{sql, Db};
use crate::error::ApiError;

/// How often the pending mutations are polled.
const MUTATION_POLL_MS: u64 = 200;
/// How long erasure waits for ClickHouse to apply its mutations before it gives up (it
/// can be run again: every step is idempotent). 10 minutes: a mutation rewrites the parts
/// it touches, which on a large table takes minutes.
const MUTATION_WAIT_MS_MAX: u64 = 600_000;

/// What an erasure did.
#[derive(Debug, serde::Serialize)]
pub struct Erased {
    pub customer_id: String,
    pub cards: Vec<String>,
}

pub async fn erase_customer(db: &Db, customer: &str) -> Result<Erased, ApiError> {
    let cards: Vec<String> = db.query(sql::CUSTOMER_CARDS).bind(customer).fetch_all().await?;
    if cards.is_empty() {
        return Err(ApiError::not_found(
            "unknown_customer",
            format!("no card was opened for customer `{customer}`"),
        ));
    }
    db.query(sql::ERASE_SETTLEMENTS).bind(customer).execute().await?;
    db.query(sql::ERASE_LEDGER).bind(customer).execute().await?;
    db.query(sql::ERASE_CARD_ACTIVITY).bind(customer).execute().await?;
    for card in &cards {
        db.query(sql::ERASE_REJECTS).bind(card).execute().await?;
    }
    let mut waited_ms = 0;
    loop {
        let pending: u64 = db.query(sql::MUTATIONS_PENDING).fetch_one().await?;
        if pending == 0 {
            break;
        }
        if waited_ms >= MUTATION_WAIT_MS_MAX {
            return Err(ApiError::unavailable(
                "erase_pending",
                "ClickHouse has not applied the erasure yet; run it again",
            ));
        }
        tokio::time::sleep(Duration::from_millis(MUTATION_POLL_MS)).await;
        waited_ms += MUTATION_POLL_MS;
    }
    let left: u64 = db
        .query(sql::ERASED_CHECK)
        .bind(customer)
        .bind(customer)
        .bind(customer)
        .fetch_one()
        .await?;
    if left > 0 {
        return Err(ApiError::unavailable(
            "erase_incomplete",
            format!("{left} rows still hold personal data; run it again"),
        ));
    }
    Ok(Erased { customer_id: customer.to_string(), cards })
}
