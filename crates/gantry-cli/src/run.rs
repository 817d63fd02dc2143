//! `gantry run` and `gantry schema apply`.
//!
//! Configuration: an optional TOML file (every key of `PipelineConfig`; unknown keys are an
//! error), then the flags given on the command line; validated before anything starts.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gantry_core::TariffStore;
use gantry_pipeline::PipelineConfig;

#[derive(clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (keys as in `PipelineConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tariff version directory, or a directory of versions.
    #[arg(long)]
    tariff: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: Option<String>,
    #[arg(long)]
    clickhouse_url: Option<String>,
    #[arg(long)]
    database: Option<String>,
    #[arg(long)]
    group_id: Option<String>,
    /// Stop once all partitions are drained and idle this long (0: run until stopped).
    #[arg(long)]
    exit_when_idle_ms: Option<u64>,
}

/// Exit status when Gantry stops without landing everything it held (a second signal, or
/// `stop_timeout_ms` passed): nothing is lost, a restart re-reads it (`EX_TEMPFAIL`).
const EXIT_STOPPED_UNLANDED: i32 = 75;

/// SIGTERM or SIGINT: stop polling, land what is in flight, checkpoint, leave the group. A
/// second signal, or `stop_timeout` after the first, exits at once: safe at any moment, as a
/// crash is (ARCHITECTURE.md, "exactly once").
fn watch_signals(stop: Arc<AtomicBool>, stop_timeout: Duration) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                stop_timeout_ms = stop_timeout.as_millis() as u64,
                "stopping: landing what is in flight (a second signal exits at once)"
            );
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::error!("second signal: exiting without landing the rest"),
                _ = term.recv() => tracing::error!("second signal: exiting without landing the rest"),
                _ = tokio::time::sleep(stop_timeout) => {
                    tracing::error!("stop_timeout_ms passed: exiting without landing the rest")
                }
            }
            std::process::exit(EXIT_STOPPED_UNLANDED);
        });
    });
}

#[derive(clap::Args)]
pub struct SchemaArgs {
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    #[arg(long, default_value = "gantry")]
    database: String,
}

pub fn schema_apply(args: SchemaArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = gantry_clickhouse::Store::new(&args.clickhouse_url, &args.database);
    rt.block_on(store.apply_schema()).with_context(|| {
        format!("applying the schema to {} ({})", args.clickhouse_url, args.database)
    })?;
    eprintln!("schema applied to database `{}`", args.database);
    Ok(())
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut cfg: PipelineConfig = match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("in {}", p.display()))?,
        None => PipelineConfig::default(),
    };
    if let Some(v) = args.brokers {
        cfg.brokers = v;
    }
    if let Some(v) = args.clickhouse_url {
        cfg.clickhouse_url = v;
    }
    if let Some(v) = args.database {
        cfg.database = v;
    }
    if let Some(v) = args.group_id {
        cfg.group_id = v;
    }
    if let Some(v) = args.exit_when_idle_ms {
        cfg.exit_when_idle_ms = v;
    }
    match &cfg.tariff_dir {
        Some(d) if *d != args.tariff => anyhow::bail!(
            "configuration: tariff_dir {} differs from --tariff {}",
            d.display(),
            args.tariff.display()
        ),
        _ => cfg.tariff_dir = Some(args.tariff.clone()),
    }
    cfg.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    match &cfg.pii_keys_file {
        Some(path) => cfg.plate_keys = Some(Arc::new(gantry_pii::Keyring::load(path)?)),
        None => tracing::warn!("no pii_keys_file: plates are not stored (contract §5.2)"),
    }
    let set = crate::load_tariffs(&args.tariff, cfg.network_utc_offset_min)?;
    let tariffs = Arc::new(TariffStore::new(set));
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone(), Duration::from_millis(cfg.stop_timeout_ms));
    let summary = gantry_pipeline::run(cfg, tariffs, stop)?;
    eprintln!(
        "gantry: {} messages, last batch landed after {:.1} s ({:.0} msg/s)",
        summary.messages,
        summary.until_last_landed.as_secs_f64(),
        summary.messages as f64 / summary.until_last_landed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
