//! Answers computed once and served from memory, for the questions that read a whole
//! population or a whole day and whose inputs change slowly or never:
//!
//! * [`Population`]: segments and churn risk per as-of date, recomputed when older than
//!   `population_refresh_ms` (they scan the whole usage rollup; value tiers and churn are
//!   weekly questions, so minutes of staleness do not matter, and every answer says when it
//!   was computed);
//! * [`BatchCounts`]: the rows each committed batch wrote to `settlements`, `rejects` and
//!   `duplicates`, which reconciliation sets against the journal. A committed batch's rows
//!   never change (erasure blanks values, it deletes no row), so each batch is counted once
//!   per process; a restart counts again.
//!
//! One computation at a time per cache: a request that finds the value missing waits for
//! the one computing it instead of starting the same scan again (16 clients asking for
//! churn at once make one scan, not 16).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A value per key, recomputed when older than its refresh interval.
pub struct Population<T> {
    slots: Mutex<HashMap<i64, (Instant, Arc<T>)>>,
    refresh: Duration,
}

/// As-of dates kept at most: today and a few dates an analyst compares it with; the
/// oldest goes first. Each holds a whole population's values (~100 bytes a customer).
const POPULATION_DATES_MAX: usize = 4;

impl<T> Population<T> {
    pub fn new(refresh: Duration) -> Population<T> {
        Population { slots: Mutex::new(HashMap::new()), refresh }
    }

    /// The value for `key` and when it was computed: the kept one if fresh, else `compute`'s
    /// (an error is not kept).
    pub async fn get<E, F>(&self, key: i64, compute: F) -> Result<(Arc<T>, Instant), E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let mut slots = self.slots.lock().await;
        if let Some((at, v)) = slots.get(&key) {
            if at.elapsed() < self.refresh {
                return Ok((v.clone(), *at));
            }
        }
        let v = Arc::new(compute.await?);
        let at = Instant::now();
        if slots.len() >= POPULATION_DATES_MAX && !slots.contains_key(&key) {
            let oldest = slots.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k);
            slots.remove(&oldest.expect("a full map has an oldest"));
        }
        slots.insert(key, (at, v.clone()));
        Ok((v, at))
    }
}

/// A committed batch: (partition, batch_seq).
pub type BatchKey = (u16, u64);

/// Rows a batch wrote: settlements, rejects, duplicates.
pub type Rows = [u64; 3];

/// Batches whose counts are kept at most (~40 bytes each): a few days of a busy network's
/// batches (a batch a second per partition is 1.4M a day at 16 partitions). Past it the
/// counts are dropped and counted again when asked: a bound, not a leak.
const BATCHES_COUNTED_MAX: usize = 4_000_000;

/// Each committed batch's table rows, counted once.
#[derive(Default)]
pub struct BatchCounts {
    counted: Mutex<HashMap<BatchKey, Rows>>,
}

impl BatchCounts {
    /// The rows of each batch in `batches`, counting those not counted yet with `count`
    /// (which must answer for every batch it is given: one it finds no rows of has none).
    pub async fn get<E, F, Fut>(&self, batches: &[BatchKey], count: F) -> Result<Vec<Rows>, E>
    where
        F: FnOnce(Vec<BatchKey>) -> Fut,
        Fut: Future<Output = Result<HashMap<BatchKey, Rows>, E>>,
    {
        let mut counted = self.counted.lock().await;
        if counted.len() + batches.len() > BATCHES_COUNTED_MAX {
            counted.clear();
        }
        let missing: Vec<BatchKey> =
            batches.iter().filter(|b| !counted.contains_key(b)).copied().collect();
        if !missing.is_empty() {
            let found = count(missing.clone()).await?;
            for b in missing {
                counted.insert(b, found.get(&b).copied().unwrap_or_default());
            }
        }
        Ok(batches.iter().map(|b| counted[b]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_value_is_kept_and_a_stale_one_recomputed() {
        let p: Population<u32> = Population::new(Duration::from_millis(50));
        let (v, _) = p.get(1, async { Ok::<_, ()>(7) }).await.unwrap();
        assert_eq!(*v, 7);
        let (v, _) = p.get(1, async { Ok::<_, ()>(8) }).await.unwrap();
        assert_eq!(*v, 7, "fresh: kept");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (v, _) = p.get(1, async { Ok::<_, ()>(9) }).await.unwrap();
        assert_eq!(*v, 9, "stale: recomputed");
        assert!(p.get(2, async { Err::<u32, _>("down") }).await.is_err());
        let (v, _) = p.get(2, async { Ok::<_, ()>(3) }).await.unwrap();
        assert_eq!(*v, 3, "an error is not kept");
        for k in 3..10 {
            p.get(k, async { Ok::<_, ()>(0) }).await.unwrap();
        }
        assert_eq!(p.slots.lock().await.len(), POPULATION_DATES_MAX);
    }

    #[tokio::test]
    async fn each_batch_is_counted_once() {
        let c = BatchCounts::default();
        let first = c
            .get(&[(0, 1), (0, 2)], |m| async move {
                assert_eq!(m, [(0, 1), (0, 2)]);
                Ok::<_, ()>(HashMap::from([((0, 1), [5, 1, 0])]))
            })
            .await
            .unwrap();
        assert_eq!(first, [[5, 1, 0], [0, 0, 0]], "a batch with no rows has none");
        let second = c
            .get(&[(0, 2), (1, 1)], |m| async move {
                assert_eq!(m, [(1, 1)], "only what was not counted");
                Ok::<_, ()>(HashMap::from([((1, 1), [2, 0, 0])]))
            })
            .await
            .unwrap();
        assert_eq!(second, [[0, 0, 0], [2, 0, 0]]);
    }
}
