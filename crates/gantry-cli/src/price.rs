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
use gantry_core::tariff::{TariffSet, TariffStore};
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
    let tariffs = TariffStore::load_root(&args.tariff, args.utc_offset_min)
        .with_context(|| format!("loading tariffs from {}", args.tariff.display()))?;
    anyhow::ensure!(
        !tariffs.versions().is_empty(),
        "no tariff version under {}",
        args.tariff.display()
    );
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
        for_each_lane_record(&line, &cfg, |_, rec| {
            buf.clear();
            buf.extend_from_slice(b"{\"line\":");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            let tx = match rec {
                Ok(tx) => tx,
                Err(reason) => return reject(&mut buf, reason, None),
            };
            buf.extend_from_slice(b",\"tradeId\":");
            json_str(&mut buf, &tx.trade_id);
            let Some(v) = tariffs.version_at(tx.trans_time_ms) else {
                return reject(&mut buf, RejectReason::NoTariffInForce, None);
            };
            splits.clear();
            match price(&tx, v, offset_min, &mut splits) {
                Ok(p) => {
                    let num = |buf: &mut Vec<u8>, k: &[u8], x: i64| {
                        buf.extend_from_slice(k);
                        buf.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
                    };
                    num(&mut buf, b",\"payFee\":", p.pay_fee);
                    num(&mut buf, b",\"discountFee\":", p.discount_fee);
                    num(&mut buf, b",\"fee\":", p.fee);
                    buf.extend_from_slice(b",\"splits\":[");
                    for (i, s) in splits.iter().enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(b"{\"intervalId\":");
                        json_str(&mut buf, &v.unit(s.unit).id);
                        buf.extend_from_slice(b",\"ownerId\":");
                        json_str(&mut buf, v.owner_of(s.unit));
                        num(&mut buf, b",\"fee\":", s.fee);
                        buf.push(b'}');
                    }
                    buf.extend_from_slice(b"],\"tariffVersion\":");
                    json_str(&mut buf, &v.version);
                    buf.extend_from_slice(b"}\n");
                }
                Err(RejectReason::UnknownInterval) => {
                    let unit = tx.intervals().find(|u| v.unit_index(u).is_none());
                    reject(&mut buf, RejectReason::UnknownInterval, unit)
                }
                Err(r) => reject(&mut buf, r, None),
            }
        });
        out.write_all(&buf)?;
    }
}

fn reject(buf: &mut Vec<u8>, reason: RejectReason, detail: Option<&str>) {
    buf.extend_from_slice(b",\"reject\":{\"reason\":\"");
    buf.extend_from_slice(reason.code().as_bytes());
    buf.extend_from_slice(b"\",\"detail\":");
    match (detail, reason.field(), reason) {
        (Some(d), _, _) => json_str(buf, d),
        (None, Some(f), _) => json_str(buf, f.name()),
        (None, None, RejectReason::NotJson { at }) => json_str(buf, &format!("at byte {at}")),
        _ => buf.extend_from_slice(b"\"\""),
    }
    buf.extend_from_slice(b"}}\n");
}

/// Writes `s` as a JSON string literal.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&s.as_bytes()[start..]);
    buf.push(b'"');
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

    #[test]
    fn json_strings_are_escaped() {
        let mut b = Vec::new();
        json_str(&mut b, "a\"b\\c\nd\u{1}苏");
        let back: String = serde_json::from_slice(&b).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}苏");
    }
}
