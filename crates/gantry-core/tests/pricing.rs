//! Contract §2 pricing, case by case, with hand-computed expectations (see each row's
//! comment for the arithmetic). Fixtures: `fixtures/tariffs/a-20260901` (ETC 3%, National Day
//! holiday window) and `b-20261101` (ETC 5%, night discounts, axle surcharge).

use std::path::Path;

use gantry_core::parse::{parse_lane_record, ParseConfig};
use gantry_core::pricing::{flags, price, Split};
use gantry_core::reject::RejectReason;
use gantry_core::tariff::{TariffSet, TariffStore};

const U1: &str = "G0015320030010";
const U2: &str = "G0015320030020";
const U3: &str = "G0015320040010";

fn tariffs() -> TariffSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tariffs");
    TariffStore::load_root(&root, 480).expect("fixture tariffs load")
}

/// A lane record; `extra` is spliced in as more JSON fields.
fn record(units: &str, time: &str, media: u8, vtype: u8, extra: &str) -> String {
    let card =
        if media == 1 { r#""cpuCardId":"32011820220000123456","# } else { r#""obuId":"OBU1","# };
    format!(
        r#"{{"tradeId":"T1","gantryId":"G001532003001010","tollIntervalId":"{units}","transTime":"{time}","mediaType":{media},{card}"vehicleType":{vtype}{extra}}}"#
    )
}

struct Outcome {
    pay_fee: i64,
    discount_fee: i64,
    fee: i64,
    flags: u32,
    version: String,
    splits: Vec<(String, String, i64)>,
}

fn run(set: &TariffSet, json: &str) -> Result<Outcome, RejectReason> {
    let tx = parse_lane_record(json.as_bytes(), &ParseConfig::default())?;
    let v = set.version_at(tx.trans_time_ms).ok_or(RejectReason::NoTariffInForce)?;
    let mut splits: Vec<Split> = Vec::new();
    let p = price(&tx, v, 480, &mut splits)?;
    assert_eq!(
        splits.iter().map(|s| s.fee).sum::<i64>(),
        p.fee,
        "owners' shares add up to the fee"
    );
    assert_eq!(splits.iter().map(|s| s.pay_fee).sum::<i64>(), p.pay_fee);
    for s in &splits {
        let at = s.id_at as usize;
        assert_eq!(
            &tx.toll_interval_id[at..at + s.id_len as usize],
            &*v.unit(s.unit).id,
            "a split's place in tollIntervalId is its unit's id"
        );
    }
    Ok(Outcome {
        pay_fee: p.pay_fee,
        discount_fee: p.discount_fee,
        fee: p.fee,
        flags: p.flags,
        version: v.version.to_string(),
        splits: splits
            .iter()
            .map(|s| (v.unit(s.unit).id.to_string(), v.owner_of(s.unit).to_string(), s.fee))
            .collect(),
    })
}

const NOON_B: &str = "2026-11-10T12:00:00";

#[test]
fn every_class_column_etc_and_cpc() {
    let set = tariffs();
    // (class, base on U1, ETC fee = base − round(base × 5%), half-up)
    let table: &[(u8, i64, i64)] = &[
        (1, 620, 589),   // 31.0
        (2, 930, 883),   // 46.5 → 47
        (3, 1240, 1178), // 62.0
        (4, 1490, 1415), // 74.5 → 75
        (11, 620, 589),
        (12, 1110, 1054), // 55.5 → 56
        (13, 1610, 1529), // 80.5 → 81
        (14, 1980, 1881), // 99.0
        (15, 2230, 2118), // 111.5 → 112
        (16, 2480, 2356), // 124.0
        (21, 620, 589),
        (22, 1110, 1054),
        (23, 1610, 1529),
        (24, 1980, 1881),
        (25, 2230, 2118),
        (26, 2480, 2356),
    ];
    for &(class, base, etc_fee) in table {
        let o = run(&set, &record(U1, NOON_B, 1, class, "")).unwrap();
        assert_eq!(
            (o.pay_fee, o.fee, o.discount_fee),
            (base, etc_fee, base - etc_fee),
            "ETC class {class}"
        );
        assert_eq!(o.version, "32-20261101-001");
        let o = run(&set, &record(U1, NOON_B, 2, class, "")).unwrap();
        assert_eq!(
            (o.pay_fee, o.fee, o.discount_fee),
            (base, base, 0),
            "CPC class {class}: no ETC discount"
        );
    }
}

#[test]
fn etc_rounding_is_half_up_per_unit() {
    let set = tariffs();
    // U2 class 2: 611 × 5% = 30.55 → 31; class 4: 1003 × 5% = 50.15 → 50; class 3: 815 × 5% = 40.75 → 41.
    for (class, fee) in [(2, 580), (4, 953), (3, 774), (1, 385)] {
        assert_eq!(run(&set, &record(U2, NOON_B, 1, class, "")).unwrap().fee, fee, "class {class}");
    }
}

#[test]
fn multi_unit_records_split_per_owner() {
    let set = tariffs();
    let o = run(&set, &record(&format!("{U1}|{U2}"), NOON_B, 1, 1, "")).unwrap();
    // 620 → 589, 405 → 385 (20.25 → 20)
    assert_eq!((o.pay_fee, o.fee, o.discount_fee), (1025, 974, 51));
    assert_eq!(
        o.splits,
        vec![(U1.into(), "OP-3201-01".into(), 589), (U2.into(), "OP-3201-02".into(), 385)]
    );
    assert!(o.flags & flags::MULTI_UNIT != 0);
    // The same unit twice (a gantry filling in) is charged twice.
    let o = run(&set, &record(&format!("{U1}|{U1}|{U2}"), NOON_B, 1, 1, "")).unwrap();
    assert_eq!((o.pay_fee, o.fee), (1645, 1563));
}

#[test]
fn axle_surcharge_above_six_axles() {
    let set = tariffs();
    let cases: &[(&str, u8, u8, i64, i64)] = &[
        // 2480 + round(2480 × 1 × 15%) = 2480 + 372 = 2852; ETC 142.6 → 143
        (U1, 16, 7, 2852, 2709),
        // 2480 + round(2480 × 3 × 15%) = 2480 + 1116 = 3596; ETC 179.8 → 180
        (U1, 16, 9, 3596, 3416),
        // 1621 + round(243.15) = 1864; ETC 93.2 → 93
        (U2, 26, 7, 1864, 1771),
        // six axles: no surcharge
        (U1, 16, 6, 2480, 2356),
        // class 15 never has the surcharge
        (U1, 15, 7, 2230, 2118),
    ];
    for &(unit, class, axles, pay, fee) in cases {
        let o = run(&set, &record(unit, NOON_B, 1, class, &format!(r#","axleCount":{axles}"#)))
            .unwrap();
        assert_eq!((o.pay_fee, o.fee), (pay, fee), "class {class}, {axles} axles on {unit}");
        assert_eq!(
            o.flags & flags::AXLE_SURCHARGE != 0,
            pay != 2480 && pay != 2230,
            "flag for class {class} {axles}"
        );
    }
    // Surcharge applies per unit: U1 + U2, class 16, 7 axles: 2852 + (1621 + 243) = 4716.
    let o = run(&set, &record(&format!("{U1}|{U2}"), NOON_B, 1, 16, r#","axleCount":7"#)).unwrap();
    assert_eq!(o.pay_fee, 4716);
}

#[test]
fn exempt_vehicle_classes_pass_free() {
    let set = tariffs();
    for kind in [8, 10, 12, 14, 21, 23, 26] {
        let o = run(
            &set,
            &record(&format!("{U1}|{U2}"), NOON_B, 1, 1, &format!(r#","vehicleClass":{kind}"#)),
        )
        .unwrap();
        assert_eq!((o.pay_fee, o.fee, o.discount_fee), (1025, 0, 1025), "kind {kind}");
        assert!(o.flags & flags::EXEMPT != 0);
        assert!(o.splits.iter().all(|s| s.2 == 0));
    }
    for kind in [0, 6, 9, 22] {
        let o =
            run(&set, &record(U1, NOON_B, 1, 1, &format!(r#","vehicleClass":{kind}"#))).unwrap();
        assert_eq!(o.fee, 589, "kind {kind} pays");
    }
}

#[test]
fn holiday_window_edges_and_seat_rule() {
    let set = tariffs();
    // Version A: ETC 3%: 620 − round(18.6) = 601; class 2: 930 − round(27.9) = 902.
    let cases: &[(&str, u8, &str, i64)] = &[
        ("2026-09-30T23:59:59", 1, r#","vehicleSeat":5"#, 601),
        ("2026-10-01T00:00:00", 1, r#","vehicleSeat":5"#, 0),
        ("2026-09-30T16:00:00Z", 1, r#","vehicleSeat":5"#, 0), // same instant, written in UTC
        ("2026-10-07T23:59:59", 1, r#","vehicleSeat":5"#, 0),
        ("2026-10-07T23:59:59.999", 1, "", 0),
        ("2026-10-08T00:00:00", 1, r#","vehicleSeat":5"#, 601),
        ("2026-10-03T12:00:00", 1, r#","vehicleSeat":7"#, 0),
        ("2026-10-03T12:00:00", 1, r#","vehicleSeat":8"#, 601),
        ("2026-10-03T12:00:00", 1, "", 0), // no vehicleSeat: eligible
        ("2026-10-03T12:00:00", 2, r#","vehicleSeat":5"#, 902),
    ];
    for &(time, class, extra, fee) in cases {
        let o = run(&set, &record(U1, time, 1, class, extra)).unwrap();
        assert_eq!(o.fee, fee, "{time} class {class} {extra}");
        assert_eq!(o.version, "32-20260901-001");
        assert_eq!(o.flags & flags::HOLIDAY_FREE != 0, fee == 0);
    }
    // CPC vehicles pass free too.
    assert_eq!(run(&set, &record(U1, "2026-10-03T12:00:00", 2, 1, "")).unwrap().fee, 0);
}

#[test]
fn time_discount_window_edges() {
    let set = tariffs();
    // Class 16 on U1, 00:00–06:00, 12%: t = round(297.6) = 298; e = round(2182 × 5%) = round(109.1) = 109.
    let night = 2480 - 298 - 109;
    let cases: &[(&str, u8, &str, i64)] = &[
        ("2026-11-10T00:00:00", 16, U1, night),
        ("2026-11-10T03:00:00", 16, U1, night),
        ("2026-11-10T05:59:59", 16, U1, night),
        ("2026-11-10T06:00:00", 16, U1, 2356),
        ("2026-11-09T23:59:59", 16, U1, 2356),
        ("2026-11-09T19:00:00Z", 16, U1, night), // 03:00 local
        // 15 is in the rule too: t = round(267.6) = 268; e = round(1962 × 5%) = 98.1 → 98
        ("2026-11-10T01:00:00", 15, U1, 2230 - 268 - 98),
        // The rule names only U1: U2 pays the day fee (1621 − 81).
        ("2026-11-10T03:00:00", 16, U2, 1540),
        // Wrapping rule 22:00–02:00 for class 11 on every unit: t = 62, e = round(27.9) = 28.
        ("2026-11-10T22:00:00", 11, U1, 530),
        ("2026-11-10T23:30:00", 11, U1, 530),
        ("2026-11-10T01:59:59", 11, U1, 530),
        ("2026-11-10T02:00:00", 11, U1, 589),
        ("2026-11-10T21:59:59", 11, U1, 589),
        // U2 class 11 at night: t = round(40.5) = 41 (half-up), e = round(18.2) = 18.
        ("2026-11-10T23:00:00", 11, U2, 405 - 41 - 18),
    ];
    for &(time, class, unit, fee) in cases {
        let o = run(&set, &record(unit, time, 1, class, "")).unwrap();
        assert_eq!(o.fee, fee, "{time} class {class} on {unit}");
        assert_eq!(
            o.flags & flags::TIME_DISCOUNT != 0,
            fee != 2356 && fee != 589 && fee != 1540,
            "{time} {class}"
        );
    }
    // Per unit: U1 at night, U2 by day → 2073 + 1540.
    let o = run(&set, &record(&format!("{U1}|{U2}"), "2026-11-10T03:00:00", 1, 16, "")).unwrap();
    assert_eq!((o.pay_fee, o.fee, o.discount_fee), (4101, 3613, 488));
    // CPC: the time discount but no ETC discount: 2480 − 298.
    assert_eq!(run(&set, &record(U1, "2026-11-10T03:00:00", 2, 16, "")).unwrap().fee, 2182);
    // Exemption wins over the time discount.
    assert_eq!(
        run(&set, &record(U1, "2026-11-10T03:00:00", 1, 16, r#","vehicleClass":21"#)).unwrap().fee,
        0
    );
}

#[test]
fn version_selection_by_trans_time() {
    let set = tariffs();
    let cases = [
        ("2026-10-31T23:59:59", "32-20260901-001", 601),
        ("2026-10-31T16:00:00Z", "32-20261101-001", 589),
        ("2026-11-01T00:00:00", "32-20261101-001", 589),
        ("2027-03-01T00:00:00", "32-20261101-001", 589),
    ];
    for (time, version, fee) in cases {
        let o = run(&set, &record(U1, time, 1, 1, "")).unwrap();
        assert_eq!((o.version.as_str(), o.fee), (version, fee), "{time}");
    }
    assert_eq!(
        run(&set, &record(U1, "2026-08-31T23:59:59", 1, 1, "")).err(),
        Some(RejectReason::NoTariffInForce)
    );
}

#[test]
fn unknown_units_and_classes_reject() {
    let set = tariffs();
    assert_eq!(
        run(&set, &record("G9999", NOON_B, 1, 1, "")).err(),
        Some(RejectReason::UnknownInterval)
    );
    assert_eq!(
        run(&set, &record(&format!("{U1}|G9999"), NOON_B, 1, 1, "")).err(),
        Some(RejectReason::UnknownInterval)
    );
    // U3 has no fee for class 2.
    assert_eq!(
        run(&set, &record(U3, NOON_B, 1, 2, "")).err(),
        Some(RejectReason::UnknownVehicleType)
    );
    assert_eq!(
        run(&set, &record(&format!("{U1}|{U3}"), NOON_B, 1, 12, "")).err(),
        Some(RejectReason::UnknownVehicleType)
    );
    assert_eq!(run(&set, &record(U3, NOON_B, 1, 1, "")).unwrap().fee, 333 - 17); // 16.65 → 17
                                                                                 // A class the standard does not have is rejected by the parser.
    assert_eq!(
        run(&set, &record(U1, NOON_B, 1, 5, "")).err().map(|r| r.code()),
        Some("out_of_range")
    );
}

#[test]
fn lane_fee_mismatch_is_flagged() {
    let set = tariffs();
    let o = run(&set, &record(U1, NOON_B, 1, 1, r#","fee":589"#)).unwrap();
    assert_eq!(o.flags & flags::LANE_FEE_MISMATCH, 0);
    let o = run(&set, &record(U1, NOON_B, 1, 1, r#","fee":590"#)).unwrap();
    assert_ne!(o.flags & flags::LANE_FEE_MISMATCH, 0);
    assert_eq!(o.fee, 589, "Gantry's own price stands");
}
