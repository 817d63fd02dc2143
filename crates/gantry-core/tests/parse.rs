//! The parser against the contract's field rules (§1), and against arbitrary bytes.

use std::borrow::Cow;

use gantry_core::parse::{
    for_each_account_event, for_each_lane_record, parse_lane_record, ParseConfig,
};
use gantry_core::record::{AccountEventKind, CardId, CardStatus, CardType, MediaType};
use gantry_core::reject::{Field, RejectReason};
use proptest::prelude::*;

const GOOD: &str = r#"{"tradeId":"G0015320030010102026111012000001","gantryId":"G001532003001010","tollIntervalId":"G0015320030010","transTime":"2026-11-10T12:00:00","mediaType":1,"cpuCardId":"32011820220000123456","obuId":"3201A1B2C3D4","vehiclePlate":"苏A12345_0","vehicleType":1,"vehicleClass":0,"axleCount":2,"vehicleSeat":5,"passId":"P1","fee":589}"#;

fn cfg() -> ParseConfig {
    ParseConfig::default()
}

fn lane(json: &str) -> Result<gantry_core::record::LaneTx<'_>, RejectReason> {
    parse_lane_record(json.as_bytes(), &cfg())
}

/// GOOD with one field replaced (or removed when `value` is None).
fn with(field: &str, value: Option<&str>) -> String {
    let v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    let mut m = v.as_object().unwrap().clone();
    match value {
        Some(val) => {
            m.insert(field.into(), serde_json::from_str(val).unwrap());
        }
        None => {
            m.remove(field);
        }
    }
    serde_json::to_string(&m).unwrap()
}

#[test]
fn a_full_record_borrows_its_text() {
    let tx = lane(GOOD).unwrap();
    assert!(matches!(tx.trade_id, Cow::Borrowed(_)));
    assert_eq!(tx.gantry_id, "G001532003001010");
    assert_eq!(tx.media_type, MediaType::Etc);
    assert_eq!(tx.card_id, CardId::parse("32011820220000123456"));
    assert_eq!(tx.vehicle_plate.as_deref(), Some("苏A12345_0"));
    assert_eq!(
        (tx.vehicle_type, tx.vehicle_class, tx.axle_count, tx.vehicle_seat, tx.lane_fee),
        (1, 0, Some(2), Some(5), Some(589))
    );
    assert_eq!(tx.pass_id.as_deref(), Some("P1"));
}

#[test]
fn escapes_unknown_fields_nulls_and_whitespace() {
    let json = r#" { "tradeId" : "T\u0031\"x" , "gantryId":"G\/1", "tollIntervalId":"U1|U2", "transTime":"2026-11-10T12:00:00.5+08:00",
        "mediaType":2, "obuId":null, "vehiclePlate":"\u82cfA1\ud83d\ude97", "vehicleType":16, "axleCount":7,
        "extra":{"nested":[1,2.5e3,-0,true,false,null,{"a":"}"}]}, "vehicleClass":null, "zzz":"\\" } "#;
    let tx = lane(json).unwrap();
    assert_eq!(tx.trade_id, "T1\"x");
    assert_eq!(tx.gantry_id, "G/1");
    assert_eq!(tx.vehicle_plate.as_deref(), Some("苏A1🚗"));
    assert_eq!(tx.intervals().collect::<Vec<_>>(), ["U1", "U2"]);
    assert_eq!(tx.unit_count, 2);
    assert_eq!(
        (tx.media_type, tx.card_id, tx.obu_id.clone(), tx.vehicle_class),
        (MediaType::Cpc, None, None, 0)
    );
    assert_eq!(tx.trans_time_ms % 1000, 500);
}

#[test]
fn each_field_rule_rejects_with_the_field() {
    use Field::*;
    use RejectReason::*;
    let cases: &[(&str, Option<&str>, RejectReason)] = &[
        ("tradeId", None, MissingField(TradeId)),
        ("tradeId", Some(r#""""#), OutOfRange(TradeId)),
        ("tradeId", Some(&format!(r#""{}""#, "x".repeat(41))), OutOfRange(TradeId)),
        ("tradeId", Some("12"), WrongType(TradeId)),
        ("gantryId", None, MissingField(GantryId)),
        ("gantryId", Some(&format!(r#""{}""#, "g".repeat(33))), OutOfRange(GantryId)),
        ("tollIntervalId", None, MissingField(TollIntervalId)),
        ("tollIntervalId", Some(r#""U1||U2""#), OutOfRange(TollIntervalId)),
        ("tollIntervalId", Some(r#""U1|""#), OutOfRange(TollIntervalId)),
        ("tollIntervalId", Some(r#""""#), OutOfRange(TollIntervalId)),
        ("tollIntervalId", Some(&format!(r#""{}""#, "U".repeat(65))), OutOfRange(TollIntervalId)),
        (
            "tollIntervalId",
            Some(&format!(r#""U1|{}""#, "U".repeat(65))),
            OutOfRange(TollIntervalId),
        ),
        (
            "tollIntervalId",
            Some(&format!(r#""{}""#, vec!["U"; 65].join("|"))),
            OutOfRange(TollIntervalId),
        ),
        ("transTime", None, MissingField(TransTime)),
        ("transTime", Some(r#""2026-11-31T00:00:00""#), OutOfRange(TransTime)),
        ("transTime", Some(r#""yesterday""#), OutOfRange(TransTime)),
        ("transTime", Some("1790000000"), WrongType(TransTime)),
        ("mediaType", None, MissingField(MediaType)),
        ("mediaType", Some("3"), OutOfRange(MediaType)),
        ("mediaType", Some(r#""1""#), WrongType(MediaType)),
        ("mediaType", Some("1.0"), WrongType(MediaType)),
        ("cpuCardId", None, MissingField(CpuCardId)),
        ("cpuCardId", Some(r#""3201-1""#), OutOfRange(CpuCardId)),
        ("cpuCardId", Some(r#""320118202200001234567""#), OutOfRange(CpuCardId)),
        ("cpuCardId", Some("3201"), WrongType(CpuCardId)),
        ("vehicleType", None, MissingField(VehicleType)),
        ("vehicleType", Some("5"), OutOfRange(VehicleType)),
        ("vehicleType", Some("27"), OutOfRange(VehicleType)),
        ("vehicleType", Some("-1"), OutOfRange(VehicleType)),
        ("vehicleClass", Some("256"), OutOfRange(VehicleClass)),
        ("axleCount", Some("1"), OutOfRange(AxleCount)),
        ("axleCount", Some("21"), OutOfRange(AxleCount)),
        ("vehicleSeat", Some("-2"), OutOfRange(VehicleSeat)),
        ("fee", Some("-1"), OutOfRange(Fee)),
        ("fee", Some("5.89"), WrongType(Fee)),
        ("obuId", Some(&format!(r#""{}""#, "o".repeat(257))), OutOfRange(ObuId)),
        ("vehiclePlate", Some("[1]"), WrongType(VehiclePlate)),
    ];
    for (field, value, want) in cases {
        let json = with(field, *value);
        assert_eq!(lane(&json).err(), Some(*want), "{field} = {value:?}");
    }
    // Beyond i64 (built by hand: serde_json would turn it into a float).
    let huge = GOOD.replace(r#""vehicleType":1"#, r#""vehicleType":99999999999999999999"#);
    assert_eq!(lane(&huge).err(), Some(OutOfRange(VehicleType)));
    // A 40-char id and a 40-char CJK id are fine (characters, not bytes).
    assert!(lane(&with("tradeId", Some(&format!(r#""{}""#, "x".repeat(40))))).is_ok());
    assert!(lane(&with("tradeId", Some(&format!(r#""{}""#, "门".repeat(40))))).is_ok());
    assert_eq!(
        lane(&with("tradeId", Some(&format!(r#""{}""#, "门".repeat(41))))).err(),
        Some(OutOfRange(TradeId))
    );
    // CPC records need no card.
    assert!(lane(
        &with("mediaType", Some("2")).replace(r#""cpuCardId":"32011820220000123456","#, "")
    )
    .is_ok());
}

#[test]
fn malformed_json_and_duplicate_fields() {
    for bad in [
        "",
        "   ",
        "[]",
        "{",
        r#"{"tradeId":"T1""#,
        r#"{"tradeId":"T1",}"#,
        "nul",
        r#"{"a":01}"#,
        "{\"a\":\"x\ty\"}",
        r#"{"a":"\x"}"#,
        r#"{"a":tru}"#,
    ] {
        let r = lane(bad);
        assert!(matches!(r, Err(RejectReason::NotJson { .. })), "{bad:?} gave {r:?}");
    }
    let dup = GOOD.replacen(r#""mediaType":1,"#, r#""mediaType":1,"mediaType":2,"#, 1);
    assert_eq!(lane(&dup).err(), Some(RejectReason::DuplicateField(Field::MediaType)));
    let mut out = Vec::new();
    for_each_lane_record(&[0xff, 0xfe], &cfg(), |raw, r| out.push((raw.to_vec(), r.err())));
    assert_eq!(out, vec![(vec![0xff, 0xfe], Some(RejectReason::NotUtf8))]);
}

#[test]
fn batched_messages_keep_good_records_around_bad_ones() {
    let other = GOOD.replace("G0015320030010102026111012000001", "T2");
    let msg = format!("{GOOD}\n{{\"tradeId\": broken\n\n{other}\r\n{{\"tradeId\":\"T3\"}}\n");
    let mut seen = Vec::new();
    for_each_lane_record(msg.as_bytes(), &cfg(), |raw, r| {
        seen.push((String::from_utf8_lossy(raw).into_owned(), r.map(|t| t.trade_id.into_owned())))
    });
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].1, Ok("G0015320030010102026111012000001".into()));
    assert_eq!(seen[1].0, "{\"tradeId\": broken");
    assert!(matches!(seen[1].1, Err(RejectReason::NotJson { at: 12 })));
    assert_eq!(seen[2].1, Ok("T2".into()));
    assert_eq!(
        seen[3],
        ("{\"tradeId\":\"T3\"}".into(), Err(RejectReason::MissingField(Field::GantryId)))
    );

    // A line that is not UTF-8 is rejected alone.
    let mut msg = GOOD.as_bytes().to_vec();
    msg.extend_from_slice(b"\n{\"tradeId\":\"\xff\"}\n");
    msg.extend_from_slice(other.as_bytes());
    let mut n = (0, 0);
    for_each_lane_record(&msg, &cfg(), |_, r| match r {
        Ok(_) => n.0 += 1,
        Err(e) => {
            assert_eq!(e, RejectReason::NotUtf8);
            n.1 += 1
        }
    });
    assert_eq!(n, (2, 1));
}

#[test]
fn account_events() {
    let parse = parse_event;
    let card = CardId::parse("3201000000000001").unwrap();
    let (id, kind) = parse(r#"{"type":"open","cardId":"3201000000000001","time":"2026-11-01T08:00:00","customerId":"C1","cardType":23,"vehicleType":1,"plate":"苏A1_0","creditLimit":50000}"#).unwrap();
    assert_eq!(id, card);
    assert_eq!(
        kind,
        AccountEventKind::Open {
            customer_id: "C1".into(),
            card_type: CardType::Postpaid,
            vehicle_type: 1,
            plate: Some("苏A1_0".into()),
            balance: 0,
            credit_limit: 50000
        }
    );
    let (_, kind) = parse(r#"{"type":"topup","cardId":"3201000000000001","time":"2026-11-01T08:00:00","topupId":"TU1","amount":10000,"channel":"app"}"#).unwrap();
    assert_eq!(
        kind,
        AccountEventKind::Topup {
            topup_id: "TU1".into(),
            amount: 10000,
            channel: Some("app".into())
        }
    );
    let (_, kind) = parse(r#"{"type":"adjust","cardId":"3201000000000001","time":"2026-11-01T08:00:00","adjustId":"AD1","amount":-500,"reason":"dispute","tradeId":"T9"}"#).unwrap();
    assert_eq!(
        kind,
        AccountEventKind::Adjust {
            adjust_id: "AD1".into(),
            amount: -500,
            reason: "dispute".into(),
            trade_id: Some("T9".into())
        }
    );
    let (_, kind) = parse(r#"{"type":"status","cardId":"3201000000000001","time":"2026-11-01T08:00:00","status":"lost"}"#).unwrap();
    assert_eq!(kind, AccountEventKind::Status { status: CardStatus::Lost });

    account_event_rejects();
}

fn parse_event(s: &str) -> Result<(CardId, AccountEventKind<'_>), RejectReason> {
    let mut out = None;
    for_each_account_event(s.as_bytes(), &cfg(), |_, r| out = Some(r.map(|e| (e.card_id, e.kind))));
    out.expect("one event")
}

fn account_event_rejects() {
    let parse = parse_event;
    use Field::*;
    use RejectReason::*;
    let bad: &[(&str, RejectReason)] = &[
        (r#"{"cardId":"1","time":"2026-11-01T08:00:00"}"#, MissingField(Type)),
        (r#"{"type":"close","cardId":"1","time":"2026-11-01T08:00:00"}"#, UnknownEventType),
        (
            r#"{"type":"topup","cardId":"1","time":"2026-11-01T08:00:00","topupId":"X","amount":0}"#,
            OutOfRange(Amount),
        ),
        (
            r#"{"type":"topup","cardId":"1","time":"2026-11-01T08:00:00","amount":5}"#,
            MissingField(TopupId),
        ),
        (
            r#"{"type":"topup","cardId":"x1","time":"2026-11-01T08:00:00","topupId":"X","amount":5}"#,
            OutOfRange(CardId),
        ),
        (
            r#"{"type":"adjust","cardId":"1","time":"2026-11-01T08:00:00","adjustId":"A","amount":5}"#,
            MissingField(Reason),
        ),
        (
            r#"{"type":"open","cardId":"1","time":"2026-11-01T08:00:00","customerId":"C","cardType":21,"vehicleType":1}"#,
            OutOfRange(CardType),
        ),
        (
            r#"{"type":"open","cardId":"1","time":"2026-11-01T08:00:00","customerId":"C","cardType":23,"vehicleType":1,"creditLimit":-1}"#,
            OutOfRange(CreditLimit),
        ),
        (
            r#"{"type":"status","cardId":"1","time":"2026-11-01T08:00:00","status":"stolen"}"#,
            OutOfRange(Status),
        ),
        (r#"{"type":"status","cardId":"1","status":"lost"}"#, MissingField(Time)),
    ];
    for (json, want) in bad {
        assert_eq!(parse(json).err(), Some(*want), "{json}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Whatever the bytes: no panic, and every record comes back as a record or a reject whose
    /// raw bytes are a piece of the message.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut n = 0;
        for_each_lane_record(&bytes, &cfg(), |raw, _| {
            n += 1;
            assert!(raw.len() <= bytes.len());
        });
        prop_assert!(n >= 1);
        for_each_account_event(&bytes, &cfg(), |_, _| {});
    }

    /// Mutations of a valid record (the interesting neighbourhood for a scanner).
    #[test]
    fn mutated_records_never_panic(pos in 0usize..GOOD.len(), byte in any::<u8>(), cut in 0usize..GOOD.len()) {
        let mut b = GOOD.as_bytes().to_vec();
        b[pos] = byte;
        for_each_lane_record(&b, &cfg(), |_, _| {});
        for_each_lane_record(&b[..cut], &cfg(), |_, _| {});
        let mut two = b.clone();
        two.push(b'\n');
        two.extend_from_slice(&GOOD.as_bytes()[..cut]);
        for_each_lane_record(&two, &cfg(), |_, _| {});
    }

    /// The string scanner agrees with serde_json on raw string bytes: quotes, escapes,
    /// control characters, multi-byte and broken UTF-8, at every offset against the scanner's
    /// 16- and 8-byte blocks. serde accepts ⇔ the record parses, with the same text.
    #[test]
    fn raw_string_bytes_agree_with_serde(pad in 0usize..24, pieces in proptest::collection::vec(0usize..13, 0..40)) {
        const ALPHABET: [&[u8]; 13] =
            [b"a", b"Z", "é".as_bytes(), "苏".as_bytes(), b"\\\"", b"\\\\", b"\\n", b"\\u00e9", b"\\", b"\x01", b"\n", b"\xff", b"\xc3"];
        let mut value = vec![b'a'; pad];
        for p in &pieces {
            value.extend_from_slice(ALPHABET[*p]);
        }
        let (head, tail) = GOOD.split_at(GOOD.find(r#""passId":"P1""#).unwrap());
        let tail = &tail[r#""passId":"P1""#.len()..];
        let mut json = head.as_bytes().to_vec();
        json.extend_from_slice(b"\"passId\":\"");
        json.extend_from_slice(&value);
        json.push(b'"');
        json.extend_from_slice(tail.as_bytes());
        let serde: Result<serde_json::Value, _> = serde_json::from_slice(&json);
        let ours = parse_lane_record(&json, &cfg());
        match serde {
            Ok(v) => {
                let tx = ours.map_err(|e| TestCaseError::fail(format!("serde accepts, we reject: {e:?}")))?;
                prop_assert_eq!(tx.pass_id.as_deref(), v["passId"].as_str());
            }
            Err(_) => prop_assert!(ours.is_err(), "serde rejects, we accept {:?}", String::from_utf8_lossy(&json)),
        }
    }

    /// A value whose first three bytes are not ASCII and the rest is (a plate's province
    /// character: the parser's short cut) is accepted exactly when it is UTF-8: overlongs,
    /// surrogates, stray continuation bytes and two- or four-byte leads in those places, with
    /// ASCII tails that end the string in the first or a later 16-byte block, and good or
    /// broken UTF-8 after the tail (also where a later block starts).
    #[test]
    fn leading_three_byte_sequences_agree_with_std(
        lead in proptest::collection::vec(proptest::sample::select(vec![0x80u8, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xE8, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF4, 0xFF]), 3),
        tail in "[A-Z0-9_]{0,20}",
        later in proptest::option::of(proptest::sample::select(vec!["苏".as_bytes(), "é".as_bytes(), b"\xff", b"\xc3", b"\xe8\x8b"])),
    ) {
        let mut value = lead.clone();
        value.extend_from_slice(tail.as_bytes());
        if let Some(l) = later {
            value.extend_from_slice(l);
        }
        let (head, rest) = GOOD.split_at(GOOD.find("苏A12345_0").unwrap());
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(&value);
        bytes.extend_from_slice(&rest.as_bytes()["苏A12345_0".len()..]);
        let ours = parse_lane_record(&bytes, &cfg());
        match std::str::from_utf8(&value) {
            Ok(v) => prop_assert_eq!(ours.map(|t| t.vehicle_plate.map(|p| p.into_owned())), Ok(Some(v.to_string()))),
            Err(_) => prop_assert_eq!(ours.err(), Some(RejectReason::NotUtf8)),
        }
    }

    /// Any string value survives the round trip through JSON escaping.
    #[test]
    fn string_escapes_round_trip(s in "\\PC{0,30}") {
        let json = with("passId", Some(&serde_json::to_string(&s).unwrap()));
        let tx = lane(&json).unwrap();
        prop_assert_eq!(tx.pass_id.as_deref(), Some(s.as_str()));
    }
}

/// The unit count the parser keeps agrees with splitting `tollIntervalId`, and the longest
/// allowed unit and the most units are accepted.
#[test]
fn unit_count_is_the_number_of_units() {
    let longest = "U".repeat(64);
    let most = vec!["U1"; 64].join("|");
    for units in [
        "G0015320030010",
        "A|B",
        "A|B|C",
        longest.as_str(),
        most.as_str(),
        &format!("{longest}|{longest}"),
    ] {
        let json = GOOD.replace(
            "\"tollIntervalId\":\"G0015320030010\"",
            &format!("\"tollIntervalId\":\"{units}\""),
        );
        let tx = lane(&json).unwrap_or_else(|e| panic!("{units}: {e:?}"));
        assert_eq!(tx.unit_count as usize, units.split('|').count(), "{units}");
        assert_eq!(
            tx.intervals().collect::<Vec<_>>(),
            units.split('|').collect::<Vec<_>>(),
            "{units}"
        );
    }
}
