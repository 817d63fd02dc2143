//! Tariff versions while running, and for replay (contract §2; ARCHITECTURE.md, "Tariffs").
//!
//! * **Reload.** The tariff directory is scanned every `tariff_scan_interval_ms`; when the
//!   versions in it (by content) differ from the published set, the new set — versions added
//!   and removed — is checked, made durable, and swapped in (`TariffStore::replace`). Workers
//!   take the set at each batch boundary, so ingestion never pauses and a batch is priced
//!   by one set throughout. A directory that does not load (a broken file, two versions of
//!   one `effective_from`) changes nothing: the error is logged and the scan tried again.
//! * **Durable sets.** Before a batch priced with a set is journaled, the set and its
//!   versions' files are in ClickHouse (`gantry_tariff_sets`, `gantry_tariffs`), and the
//!   batch's journal row names the set (`tariff_set`). A replay prices each batch with the
//!   set its row names, rebuilt from ClickHouse if the directory no longer holds it, so it
//!   prices exactly as the first run did, whatever was added or removed since.
//! * **Immutable versions.** A version name stored with other content than the directory
//!   now holds is refused (at start: Gantry does not start; while running: the reload is
//!   refused): a version used for settlement never changes meaning. Publish changes as a
//!   new version.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_clickhouse::{TariffRecord, TariffSetRecord};
use gantry_core::tariff::{version_dirs, TariffError};
use gantry_core::{TariffSet, TariffSources, TariffVersion};
use tracing::{info, warn};

use crate::io::{Io, Store};
use crate::{PipelineError, Result, Shared};

/// The stored form of `set`: its row and its versions' rows.
fn records(set: &TariffSet, instance: &str) -> (TariffSetRecord, Vec<TariffRecord>) {
    let written_at = now_secs();
    let versions: Vec<TariffRecord> = set
        .versions()
        .iter()
        .map(|v| TariffRecord {
            version: v.version.to_string(),
            source_hash: v.source_hash(),
            effective_from_ms: v.effective_from_ms,
            tariff_toml: v.sources().tariff_toml.clone(),
            intervals_csv: v.sources().intervals_csv.clone(),
            written_at,
            instance: instance.to_string(),
        })
        .collect();
    let row = TariffSetRecord {
        set_id: set.id(),
        versions: versions.iter().map(|v| v.version.clone()).collect(),
        source_hashes: versions.iter().map(|v| v.source_hash).collect(),
        written_at,
        instance: instance.to_string(),
    };
    (row, versions)
}

fn now_secs() -> u32 {
    (crate::wall_clock_ms() / 1000) as u32
}

/// Fails with [`PipelineError::TariffChanged`] if a version of `set` is stored under its
/// name with other content (its files were edited after it was used).
pub(crate) async fn check_unchanged(store: &impl Store, set: &TariffSet) -> Result<()> {
    let names: Vec<String> = set.versions().iter().map(|v| v.version.to_string()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let stored = store.tariff_hashes_named(&names).await?;
    for v in set.versions() {
        if stored.iter().any(|(name, hash)| **name == *v.version && *hash != v.source_hash()) {
            return Err(PipelineError::TariffChanged(v.version.to_string()));
        }
    }
    Ok(())
}

/// Makes `set` durable (once per set and process): called by the lander before it journals
/// a batch priced with it.
pub(crate) async fn ensure_stored<I: Io>(shared: &Shared<I>, set: &TariffSet) -> Result<()> {
    if shared.stored_sets.lock().expect("stored sets lock").contains(&set.id()) {
        return Ok(());
    }
    let (row, versions) = records(set, &shared.cfg.instance);
    shared.io.store().store_tariff_set(&row, &versions).await?;
    shared.stored_sets.lock().expect("stored sets lock").insert(set.id());
    Ok(())
}

/// The set a journaled batch was priced with: the published one if it is that set (or the
/// row predates the column: 0), else the set rebuilt from what ClickHouse stored.
pub(crate) async fn set_for_replay<I: Io>(
    shared: &Shared<I>,
    set_id: u64,
) -> Result<Arc<TariffSet>> {
    let current = shared.tariffs.snapshot();
    if set_id == 0 || set_id == current.id() || crate::mutation::on("replay_with_current_tariffs") {
        return Ok(current);
    }
    let missing = || PipelineError::TariffSetMissing(set_id);
    let store = shared.io.store();
    let row = store.tariff_set(set_id).await?.ok_or_else(missing)?;
    let stored = store.tariffs_by_hash(&row.source_hashes).await?;
    let mut versions = Vec::with_capacity(row.source_hashes.len());
    for hash in &row.source_hashes {
        let r = stored.iter().find(|r| r.source_hash == *hash).ok_or_else(missing)?;
        let sources = TariffSources {
            tariff_toml: r.tariff_toml.clone(),
            intervals_csv: r.intervals_csv.clone(),
        };
        let dir = Path::new("gantry_tariffs").join(&r.version);
        let v = TariffVersion::build(&dir, &sources, shared.cfg.network_utc_offset_min)
            .map_err(|e| PipelineError::TariffStored(set_id, e.to_string()))?;
        versions.push(v);
    }
    let set =
        TariffSet::of(versions).map_err(|e| PipelineError::TariffStored(set_id, e.to_string()))?;
    if set.id() != set_id {
        return Err(PipelineError::TariffStored(set_id, format!("rebuilt as set {}", set.id())));
    }
    info!(set = set_id, versions = ?row.versions, "replaying with a stored tariff set");
    Ok(Arc::new(set))
}

/// A tariff directory as scanned: each version's directory and files.
struct Scan {
    versions: Vec<(PathBuf, TariffSources)>,
}

impl Scan {
    fn read(root: &Path) -> std::result::Result<Scan, TariffError> {
        let versions = version_dirs(root)?
            .into_iter()
            .map(|d| TariffSources::read_dir(&d).map(|s| (d, s)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Scan { versions })
    }

    /// Whether `set` holds exactly these versions (by content).
    fn matches(&self, set: &TariffSet) -> bool {
        let mut on_disk: Vec<u64> = self.versions.iter().map(|(_, s)| s.hash()).collect();
        let mut loaded: Vec<u64> = set.versions().iter().map(|v| v.source_hash()).collect();
        on_disk.sort_unstable();
        loaded.sort_unstable();
        on_disk == loaded
    }

    fn build(&self, network_utc_offset_min: i32) -> std::result::Result<TariffSet, TariffError> {
        let versions = self
            .versions
            .iter()
            .map(|(dir, s)| TariffVersion::build(dir, s, network_utc_offset_min))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        TariffSet::of(versions)
    }
}

/// Watches `root` until the runtime stops: see the module doc, "Reload".
pub(crate) async fn watch<I: Io>(shared: Arc<Shared<I>>, root: PathBuf) {
    let every = Duration::from_millis(shared.cfg.tariff_scan_interval_ms);
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(every).await;
        match reload(&shared, &root).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    warn!(dir = %root.display(), error = %e, "tariff directory not loaded; keeping the current set");
                    last_error = e;
                }
            }
        }
    }
}

/// One scan: publishes the directory's set if it differs from the current one.
async fn reload<I: Io>(shared: &Shared<I>, root: &Path) -> Result<()> {
    let dir = root.to_path_buf();
    let offset = shared.cfg.network_utc_offset_min;
    let current = shared.tariffs.snapshot();
    let scanned = tokio::task::spawn_blocking(move || Scan::read(&dir))
        .await
        .map_err(|e| PipelineError::Worker(-1, format!("tariff scan: {e}")))?
        .map_err(|e| PipelineError::Tariff(e.to_string()))?;
    if scanned.matches(&current) {
        return Ok(());
    }
    let set = scanned.build(offset).map_err(|e| PipelineError::Tariff(e.to_string()))?;
    for v in set.versions() {
        let edited = current
            .versions()
            .iter()
            .any(|c| c.version == v.version && c.source_hash() != v.source_hash());
        if edited {
            return Err(PipelineError::TariffChanged(v.version.to_string()));
        }
    }
    check_unchanged(shared.io.store(), &set).await?;
    ensure_stored(shared, &set).await?;
    let names = |s: &TariffSet| -> HashSet<String> {
        s.versions().iter().map(|v| v.version.to_string()).collect()
    };
    let (before, after) = (names(&current), names(&set));
    info!(
        set = set.id(),
        added = ?after.difference(&before).collect::<Vec<_>>(),
        removed = ?before.difference(&after).collect::<Vec<_>>(),
        "tariff set loaded"
    );
    shared.tariffs.replace(set);
    Ok(())
}
