//! `gantry serve`, `gantry report settlement` and `gantry adjust`: the finance and CRM side
//! (contract §5), all configured by the `gantry serve` TOML file (§5.1).

use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_api::config::ServeConfig;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (contract §5.1).
    #[arg(long)]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// `gantry serve`'s configuration file (ClickHouse and database).
    #[arg(long)]
    config: PathBuf,
    /// The transaction day, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// Where the CSV goes.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct AdjustArgs {
    /// `gantry serve`'s configuration file (ClickHouse, brokers, account topic).
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    adjust_id: String,
    #[arg(long)]
    card: String,
    /// The refund, fen.
    #[arg(long)]
    amount: i64,
    /// Reason code, e.g. `double_read`.
    #[arg(long)]
    reason: String,
    /// The disputed trade.
    #[arg(long)]
    trade: String,
}

fn load(path: &Path) -> anyhow::Result<ServeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ServeConfig::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(&args.config)?;
    runtime()?.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: finishing the requests in flight");
        };
        gantry_api::serve(cfg, shutdown).await
    })?;
    Ok(())
}

/// The T+1 settlement file: one line per road owner and a `TOTAL` line, the same figures
/// as `GET /v1/settlements/daily`.
pub fn report_settlement(args: ReportArgs) -> anyhow::Result<()> {
    let cfg = load(&args.config)?;
    let db = gantry_api::db::Db::new(&cfg.clickhouse_url, &cfg.database, cfg.query_timeout_ms);
    let day = runtime()?
        .block_on(gantry_api::finance::settlements_daily_of(&db, &args.date))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let bytes = gantry_api::finance::settlement_file(&day)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "settlement {}: {} owners, {} transactions, fee {} fen → {}",
        day.date,
        day.owners.len(),
        day.total.transactions,
        day.total.fee,
        args.out.display()
    );
    Ok(())
}

pub fn adjust(args: AdjustArgs) -> anyhow::Result<()> {
    let cfg = load(&args.config)?;
    let req = gantry_api::adjust::AdjustmentRequest {
        adjust_id: args.adjust_id,
        card_id: args.card,
        amount: args.amount,
        reason: args.reason,
        trade_id: args.trade,
    };
    let done = runtime()?.block_on(async {
        let db = gantry_api::db::Db::new(&cfg.clickhouse_url, &cfg.database, cfg.query_timeout_ms);
        let a = gantry_api::adjust::Adjuster::new(
            db,
            &cfg.brokers,
            &cfg.account_topic,
            cfg.network_utc_offset_min,
        )?;
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        a.adjust(&req, &format!("cli:{user}"))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
    })?;
    println!("{}", serde_json::to_string_pretty(&done)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct EraseArgs {
    /// `gantry serve`'s configuration file (ClickHouse and database).
    #[arg(long)]
    config: PathBuf,
    /// The customer whose personal data goes.
    #[arg(long)]
    customer: String,
}

/// The right to erasure: removes a customer's plates, OBU serials, trip ids and raw
/// records; every amount stays.
pub fn pii_erase(args: EraseArgs) -> anyhow::Result<()> {
    let cfg = load(&args.config)?;
    let db = gantry_api::db::Db::new(&cfg.clickhouse_url, &cfg.database, cfg.query_timeout_ms);
    let done = runtime()?
        .block_on(gantry_api::erase::erase_customer(&db, &args.customer))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    println!("{}", serde_json::to_string_pretty(&done)?);
    Ok(())
}
