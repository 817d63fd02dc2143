//! The audit trail (contract §5.2): one row in ClickHouse table `api_audit` per request —
//! key id and roles, endpoint, the customer or card asked about, whether the answer held
//! personal data and whether a plate was shown in clear, status — the trail a
//! data-protection officer asks for. Refused requests (401, 403) are recorded too.
//!
//! An answer with personal data leaves only after its row is written: if the trail cannot
//! be written the client gets 503 `audit_unavailable`, never unrecorded data. Other answers
//! (finance figures, refusals) queue their row and leave at once. Rows are group-committed:
//! one writer task writes what has queued (at most [`AUDIT_BATCH_ROWS_MAX`]) as one INSERT
//! and then releases every request in it, at most one INSERT per `audit_insert_interval_ms`,
//! so a busy server writes a few parts per second, not one per request, and a request
//! alone waits only for its own INSERT.

use std::time::Duration;

use clickhouse::Row;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// A row of `api_audit`.
#[derive(Clone, Debug, Row, Serialize)]
pub struct AuditRow {
    pub time: u32,
    pub time_ms: u16,
    pub request_id: String,
    pub key_id: String,
    pub roles: String,
    pub method: String,
    /// The route (`/v1/cards/{cardId}`), or the raw path when no route matched.
    pub endpoint: String,
    pub query: String,
    pub customer_id: String,
    pub card_id: String,
    pub personal: u8,
    pub pii_shown: u8,
    pub status: u16,
}

/// Who or what an answer was about, set by the handler on its response; the audit layer
/// takes it from there.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub customer_id: String,
    pub card_id: String,
    /// The answer holds data about identifiable customers (trips, balances, ids).
    pub personal: bool,
    /// A plate was shown in clear (a `pii` key).
    pub pii_shown: bool,
}

/// Rows in one INSERT at most: bounds the writer's memory and one INSERT's size.
pub const AUDIT_BATCH_ROWS_MAX: usize = 4_096;
/// Requests waiting for the writer at most; more wait to enqueue (backpressure).
const AUDIT_QUEUE_ROWS_MAX: usize = 16_384;

type Ack = oneshot::Sender<Result<(), String>>;

/// The handle requests send their rows through.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<(AuditRow, Ack)>,
}

impl Audit {
    /// Starts the writer task on the current runtime.
    pub fn start(client: clickhouse::Client, insert_interval: Duration) -> Audit {
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_ROWS_MAX);
        tokio::spawn(writer(client, rx, insert_interval));
        Audit { tx }
    }

    /// Records `row`; returns once it is in ClickHouse.
    pub async fn record(&self, row: AuditRow) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx.send((row, ack)).await.map_err(|_| "audit writer stopped".to_string())?;
        done.await.map_err(|_| "audit writer stopped".to_string())?
    }

    /// Queues `row` without waiting for it to be written (for answers without personal
    /// data: a failed write is logged, not answered). Waits only while the queue is full.
    pub async fn enqueue(&self, row: AuditRow) -> Result<(), String> {
        let (ack, _) = oneshot::channel();
        self.tx.send((row, ack)).await.map_err(|_| "audit writer stopped".to_string())
    }
}

async fn writer(
    client: clickhouse::Client,
    mut rx: mpsc::Receiver<(AuditRow, Ack)>,
    interval: Duration,
) {
    let mut rows = Vec::with_capacity(AUDIT_BATCH_ROWS_MAX);
    let mut acks = Vec::with_capacity(AUDIT_BATCH_ROWS_MAX);
    let mut last_insert: Option<tokio::time::Instant> = None;
    while let Some((row, ack)) = rx.recv().await {
        rows.push(row);
        acks.push(ack);
        // Pace INSERTs (each is a part), then take everything that queued meanwhile: alone,
        // a request waits only for its own INSERT; under load, rows wait at most `interval`.
        if let Some(at) = last_insert {
            tokio::time::sleep_until(at + interval).await;
        }
        while rows.len() < AUDIT_BATCH_ROWS_MAX {
            match rx.try_recv() {
                Ok((row, ack)) => {
                    rows.push(row);
                    acks.push(ack);
                }
                Err(_) => break,
            }
        }
        last_insert = Some(tokio::time::Instant::now());
        let result = insert(&client, &rows).await.map_err(|e| {
            tracing::error!(error = %e, rows = rows.len(), "audit rows not written: their requests get 503");
            e.to_string()
        });
        rows.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

async fn insert(client: &clickhouse::Client, rows: &[AuditRow]) -> clickhouse::error::Result<()> {
    let mut ins = client.insert::<AuditRow>("api_audit").await?;
    for r in rows {
        ins.write(r).await?;
    }
    ins.end().await
}
