//! `gantry price --tariff DIR [FILE]`: one JSON line out per lane record in.
//!
//! Output per record: `{"line":N,"tradeId":…,"payFee":…,"discountFee":…,"fee":…,
//! "splits":[{"intervalId":…,"ownerId":…,"fee":…}],"tariffVersion":…}`, or
//! `{"line":N,"tradeId":…,"reject":{"reason":…,"detail":…}}` (`tradeId` only if it parsed).
//! Records are priced independently: no deduplication, no accounts. `DIR` is a version
//! directory or a directory of versions; each record is priced by the version in force at
//! its `transTime`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use gantry_core::parse::{for_each_lane_record, ParseConfig};
use gantry_core::pricing::{price, Split};
use gantry_core::reject::RejectReason;
use gantry_core::tariff::TariffSet;
use gantry_core::time::DEFAULT_NETWORK_UTC_OFFSET_MIN;

/// Output buffer: large writes keep the pipe, not the syscalls, the limit.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;
const INPUT_BUFFER_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct PriceArgs {
    /// Tariff version directory (tariff.toml + intervals.csv), or a directory of them.
    #[arg(long)]
    tariff: PathBuf,
    /// Lane records, one JSON object per line; standard input if absent or `-`.
    file: Option<PathBuf>,
    /// The network's offset from UTC in minutes, for times written without one.
    #[arg(long, default_value_t = DEFAULT_NETWORK_UTC_OFFSET_MIN, allow_hyphen_values = true)]
    utc_offset_min: i32,
}

pub fn run(args: PriceArgs) -> anyhow::Result<()> {
    let tariffs = crate::load_tariffs(&args.tariff, args.utc_offset_min)?;
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => {
            Box::new(BufReader::with_capacity(INPUT_BUFFER_BYTES, io::stdin().lock()))
        }
        Some(p) => Box::new(BufReader::with_capacity(
            INPUT_BUFFER_BYTES,
            File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, stdout);
    match price_stream(input, &mut out, &tariffs, args.utc_offset_min) {
        // A closed pipe (`| head`) is a normal end for a filter.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => {
            r?;
            match out.flush() {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                r => Ok(r?),
            }
        }
    }
}

/// One output line: a priced record, or a reject. serde writes it, so any text a record or a
/// tariff carries (quotes, backslashes, control characters) stays valid JSON.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trade_id: Option<&'a str>,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Outcome<'a> {
    Priced(PricedLine<'a>),
    Rejected { reject: RejectLine<'a> },
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PricedLine<'a> {
    pay_fee: i64,
    discount_fee: i64,
    fee: i64,
    splits: Vec<SplitLine<'a>>,
    tariff_version: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SplitLine<'a> {
    interval_id: &'a str,
    owner_id: &'a str,
    fee: i64,
}

#[derive(serde::Serialize)]
struct RejectLine<'a> {
    reason: &'static str,
    detail: std::borrow::Cow<'a, str>,
}

impl<'a> RejectLine<'a> {
    fn new(reason: RejectReason, detail: Option<&'a str>) -> RejectLine<'a> {
        let detail = match (detail, reason.field(), reason) {
            (Some(d), _, _) => d.into(),
            (None, Some(f), _) => f.name().into(),
            (None, None, RejectReason::NotJson { at }) => format!("at byte {at}").into(),
            _ => "".into(),
        };
        RejectLine { reason: reason.code(), detail }
    }
}

/// Prices every line of `input` into `out`.
pub fn price_stream(
    mut input: impl BufRead,
    out: &mut impl Write,
    tariffs: &TariffSet,
    offset_min: i32,
) -> io::Result<()> {
    let cfg = ParseConfig { network_utc_offset_min: offset_min };
    let mut line = Vec::with_capacity(4096);
    let mut splits: Vec<Split> = Vec::with_capacity(8);
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        buf.clear();
        for_each_lane_record(&line, &cfg, |_, rec| {
            let rejected = |reject| Outcome::Rejected { reject };
            let (trade_id, outcome) = match &rec {
                Err(reason) => (None, rejected(RejectLine::new(*reason, None))),
                Ok(tx) => (Some(&*tx.trade_id), price_one(tx, tariffs, offset_min, &mut splits)),
            };
            let record = Line { line: n, trade_id, outcome };
            serde_json::to_writer(&mut buf, &record).expect("writing JSON into a Vec");
            buf.push(b'\n');
        });
        out.write_all(&buf)?;
    }
}

/// Prices one parsed record with the version in force at its `transTime`.
fn price_one<'a>(
    tx: &'a gantry_core::record::LaneTx<'_>,
    tariffs: &'a TariffSet,
    offset_min: i32,
    splits: &mut Vec<Split>,
) -> Outcome<'a> {
    let rejected = |reason, detail| Outcome::Rejected { reject: RejectLine::new(reason, detail) };
    let Some(v) = tariffs.version_at(tx.trans_time_ms) else {
        return rejected(RejectReason::NoTariffInForce, None);
    };
    splits.clear();
    match price(tx, v, offset_min, splits) {
        Ok(p) => Outcome::Priced(PricedLine {
            pay_fee: p.pay_fee,
            discount_fee: p.discount_fee,
            fee: p.fee,
            splits: splits
                .iter()
                .map(|s| SplitLine {
                    interval_id: &v.unit(s.unit).id,
                    owner_id: v.owner_of(s.unit),
                    fee: s.fee,
                })
                .collect(),
            tariff_version: &v.version,
        }),
        Err(RejectReason::UnknownInterval) => {
            let unit = tx.intervals().find(|u| v.unit_index(u).is_none());
            rejected(RejectReason::UnknownInterval, unit)
        }
        Err(r) => rejected(r, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_gen::{lane_lines, Network, TrafficConfig, OFFSET_MIN};

    #[test]
    fn prices_a_generated_file() {
        let net = Network::new(3, 100, 8);
        let v = net.tariff_version().unwrap();
        let set = TariffSet::default().with(v).unwrap();
        let (lines, tally) = lane_lines(
            TrafficConfig { records: 5_000, cards: 500, ..TrafficConfig::default() },
            &net,
        );
        let input = lines.join(&b'\n');
        let mut out = Vec::new();
        price_stream(&input[..], &mut out, &set, OFFSET_MIN).unwrap();
        let rows: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(rows.len() as u64, tally.lane_records());
        let priced = rows.iter().filter(|r| r.get("fee").is_some()).count() as u64;
        let rejected = rows.iter().filter(|r| r.get("reject").is_some()).count() as u64;
        assert_eq!(priced + rejected, rows.len() as u64);
        // Duplicates and unknown cards are priced here (no dedup, no accounts); bad ones are not.
        assert!(
            priced >= tally.valid + tally.duplicates + tally.unknown_card,
            "{priced} {tally:?}"
        );
        for r in rows.iter().filter(|r| r.get("fee").is_some()) {
            let split_sum: i64 =
                r["splits"].as_array().unwrap().iter().map(|s| s["fee"].as_i64().unwrap()).sum();
            assert_eq!(split_sum, r["fee"].as_i64().unwrap());
            assert_eq!(
                r["payFee"].as_i64().unwrap() - r["fee"].as_i64().unwrap(),
                r["discountFee"].as_i64().unwrap()
            );
        }
        // Line numbers point at the input.
        assert_eq!(rows[0]["line"], 1);
    }

    /// Texts from the record and the tariff are escaped: a trade id with quotes and a
    /// version name with a quote and a backslash still give one valid JSON line each.
    #[test]
    fn output_is_valid_json_whatever_the_texts() {
        let toml_text = "version = \"V\\\"1\\\\\"\neffective_from = \"2026-11-01T00:00:00+08:00\"\netc_discount_bp = 500\n";
        let csv = "interval_id,owner_id,length_m,fee_1\nU1,OP\"1,1000,100\n";
        let v = gantry_core::tariff::TariffVersion::from_sources(
            std::path::Path::new("t.toml"),
            toml_text,
            std::path::Path::new("i.csv"),
            csv,
            OFFSET_MIN,
        )
        .unwrap();
        assert_eq!(&*v.version, "V\"1\\");
        let set = TariffSet::default().with(v).unwrap();
        let input = concat!(
            r#"{"tradeId":"a\"b\u0001","gantryId":"G","tollIntervalId":"U1","transTime":"2026-11-10T12:00:00","mediaType":2,"vehicleType":1}"#,
            "\n",
            r#"{"tradeId":"x","gantryId":"G","tollIntervalId":"U9","transTime":"2026-11-10T12:00:00","mediaType":2,"vehicleType":1}"#,
            "\n{\"tradeId\":\n"
        );
        let mut out = Vec::new();
        price_stream(input.as_bytes(), &mut out, &set, OFFSET_MIN).unwrap();
        let rows: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("valid JSON"))
            .collect();
        assert_eq!(
            rows,
            [
                serde_json::json!({"line": 1, "tradeId": "a\"b\u{1}", "payFee": 100,
                    "discountFee": 0, "fee": 100,
                    "splits": [{"intervalId": "U1", "ownerId": "OP\"1", "fee": 100}],
                    "tariffVersion": "V\"1\\"}),
                serde_json::json!({"line": 2, "tradeId": "x",
                    "reject": {"reason": "unknown_interval", "detail": "U9"}}),
                serde_json::json!({"line": 3, "reject": {"reason": "not_json", "detail": "at byte 12"}}),
            ]
        );
    }
}
