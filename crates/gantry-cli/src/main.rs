//! `gantry`: the settlement engine's command line. A thin shell: every subcommand parses its
//! arguments, builds the pieces from the library crates and runs them.

#![forbid(unsafe_code)]

mod price;
mod run;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse: with the system allocator, batch-sized buffers
/// went back to the kernel and came back as fresh zeroed pages (~14% of Gantry's CPU during
/// a drain was the kernel clearing pages).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gantry", version, about = "ETC toll settlement engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Price lane records (JSON lines) with a tariff, without touching any account:
    /// "what would this tariff have charged?"
    Price(price::PriceArgs),
    /// Consume the input topics and settle into ClickHouse.
    Run(run::RunArgs),
    /// Serve the finance and CRM HTTP API (contract §5).
    Serve(serve::ServeArgs),
    /// Reports for finance.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Personal data.
    Pii {
        #[command(subcommand)]
        command: PiiCommand,
    },
    /// Settle a dispute: refund (part of) a trade's fee, as `POST /v1/adjustments` does.
    Adjust(serve::AdjustArgs),
    /// ClickHouse schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Create the database, tables and materialized views (idempotent).
    Apply(run::SchemaArgs),
    /// Print the DDL.
    Print,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The T+1 settlement file of a day: per road owner, and the total (CSV).
    Settlement(serve::ReportArgs),
}

#[derive(Subcommand)]
enum PiiCommand {
    /// Erase a customer's personal data (the right to erasure); amounts stay.
    Erase(serve::EraseArgs),
}

/// Loads a tariff version directory, or a directory of versions; none at all is an error.
fn load_tariffs(dir: &std::path::Path, offset_min: i32) -> anyhow::Result<gantry_core::TariffSet> {
    use anyhow::Context;
    let set = gantry_core::TariffStore::load_root(dir, offset_min)
        .with_context(|| format!("loading tariffs from {}", dir.display()))?;
    anyhow::ensure!(!set.versions().is_empty(), "no tariff version under {}", dir.display());
    Ok(set)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journald gets plain `key=value` lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Price(args) => price::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Report { command: ReportCommand::Settlement(args) } => {
            serve::report_settlement(args)
        }
        Command::Adjust(args) => serve::adjust(args),
        Command::Pii { command: PiiCommand::Erase(args) } => serve::pii_erase(args),
        Command::Schema { command: SchemaCommand::Apply(args) } => run::schema_apply(args),
        Command::Schema { command: SchemaCommand::Print } => {
            for s in gantry_clickhouse::schema::STATEMENTS {
                println!("-- {}\n{};\n", s.file, s.sql.trim_end());
            }
            Ok(())
        }
    }
}
