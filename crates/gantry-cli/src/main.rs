//! `gantry`: the settlement engine's command line. A thin shell: every subcommand parses its
//! arguments, builds the pieces from the library crates and runs them.

mod price;

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Price(args) => price::run(args),
    }
}
