//! Why a record was rejected. Bad input is data: every way a record can be wrong maps to one
//! of these, which becomes a row in `rejects` (`reason` = [`RejectReason::code`], `detail` =
//! [`RejectReason::detail`]) and never a panic.

use std::fmt;

/// A field of a lane record or account event, named as in the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    TradeId,
    GantryId,
    TollIntervalId,
    TransTime,
    MediaType,
    CpuCardId,
    ObuId,
    VehiclePlate,
    VehicleType,
    VehicleClass,
    AxleCount,
    VehicleSeat,
    PassId,
    Fee,
    Type,
    CardId,
    Time,
    CustomerId,
    CardType,
    Plate,
    Balance,
    CreditLimit,
    TopupId,
    Amount,
    Channel,
    AdjustId,
    Reason,
    Status,
}

impl Field {
    pub fn name(self) -> &'static str {
        use Field::*;
        match self {
            TradeId => "tradeId",
            GantryId => "gantryId",
            TollIntervalId => "tollIntervalId",
            TransTime => "transTime",
            MediaType => "mediaType",
            CpuCardId => "cpuCardId",
            ObuId => "obuId",
            VehiclePlate => "vehiclePlate",
            VehicleType => "vehicleType",
            VehicleClass => "vehicleClass",
            AxleCount => "axleCount",
            VehicleSeat => "vehicleSeat",
            PassId => "passId",
            Fee => "fee",
            Type => "type",
            CardId => "cardId",
            Time => "time",
            CustomerId => "customerId",
            CardType => "cardType",
            Plate => "plate",
            Balance => "balance",
            CreditLimit => "creditLimit",
            TopupId => "topupId",
            Amount => "amount",
            Channel => "channel",
            AdjustId => "adjustId",
            Reason => "reason",
            Status => "status",
        }
    }
}

/// The reason a record is rejected. `Copy` and allocation-free so the hot path can carry it;
/// details that need the record's text (an unknown interval id) are added when the reject row
/// is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The message is not valid UTF-8.
    NotUtf8,
    /// Not JSON, or not a JSON object; `at` is the byte offset in the object's text.
    NotJson {
        at: u32,
    },
    MissingField(Field),
    /// A field of the wrong JSON type (a string where a number belongs, a fraction for an int).
    WrongType(Field),
    /// A field of the right type outside its range or length (an unknown mediaType, a 41-char
    /// tradeId, a card id with letters, an impossible date).
    OutOfRange(Field),
    /// The same field twice in one object: ambiguous, so never guessed at.
    DuplicateField(Field),
    /// An account event whose `type` is not one of the contract's.
    UnknownEventType,
    /// A tolling unit missing from the tariff version in force.
    UnknownInterval,
    /// A vehicle class with no fee on a unit in the tariff version in force.
    UnknownVehicleType,
    /// `transTime` before every loaded tariff version's `effective_from`.
    NoTariffInForce,
    /// An ETC card (or account event's card) that was never opened. Lane records are still
    /// priced so the arrears can be recovered.
    UnknownCard,
    /// A second `open` of the same card.
    CardExists,
    /// A record older than the deduplication window behind the newest time seen: it can no
    /// longer be told apart from a replayed duplicate, so it is held for manual clearing.
    OutsideDedupWindow,
    /// A record dated further ahead of its Kafka timestamp than the allowed clock skew; taking
    /// it would advance the dedup window and forget real ids.
    TimeInFuture,
}

impl RejectReason {
    /// The stable reason code written to `rejects.reason`.
    pub fn code(self) -> &'static str {
        use RejectReason::*;
        match self {
            NotUtf8 => "not_utf8",
            NotJson { .. } => "not_json",
            MissingField(_) => "missing_field",
            WrongType(_) => "wrong_type",
            OutOfRange(_) => "out_of_range",
            DuplicateField(_) => "duplicate_field",
            UnknownEventType => "unknown_event_type",
            UnknownInterval => "unknown_interval",
            UnknownVehicleType => "unknown_vehicle_type",
            NoTariffInForce => "no_tariff_in_force",
            UnknownCard => "unknown_card",
            CardExists => "card_exists",
            OutsideDedupWindow => "outside_dedup_window",
            TimeInFuture => "time_in_future",
        }
    }

    /// The field a reason is about, if any.
    pub fn field(self) -> Option<Field> {
        use RejectReason::*;
        match self {
            MissingField(f) | WrongType(f) | OutOfRange(f) | DuplicateField(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.field()) {
            (RejectReason::NotJson { at }, _) => write!(f, "not_json at byte {at}"),
            (_, Some(field)) => write!(f, "{} {}", self.code(), field.name()),
            (_, None) => f.write_str(self.code()),
        }
    }
}
