//! Gantry's Kafka side, through librdkafka only (no broker-specific features): consumer and
//! producer configuration, the co-partitioning check, exact offset-range reads for replay,
//! and the status-list producer.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Metadata and watermark calls: long enough for a broker under load, short enough that a
/// dead broker is reported rather than waited on forever.
pub const METADATA_TIMEOUT_MS: u64 = 10_000;
/// A range read that sees no message for this long while short of its end has failed.
pub const RANGE_READ_STALL_MS: u64 = 30_000;
/// A range read whose first fetch brings nothing for this long starts further back (a broker
/// that answers a fetch inside a record batch with nothing; see `RangeReader::read`). Long
/// enough for a fresh consumer to connect and fetch on a loaded host, short because a replay
/// may read hundreds of ranges.
pub const RANGE_FIRST_RECORD_WAIT_MS: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    #[error("topics are not co-partitioned: `{lane}` has {lane_n} partitions, `{acct}` has {acct_n}; Gantry needs both input topics to have the same partition count and partitioner")]
    NotCopartitioned { lane: String, lane_n: usize, acct: String, acct_n: usize },
    #[error("reading {topic}/{partition} [{from}, {to}): no message for {RANGE_READ_STALL_MS} ms at offset {at}")]
    RangeStalled { topic: String, partition: i32, from: i64, to: i64, at: i64 },
}

pub type Result<T> = std::result::Result<T, KafkaIoError>;

/// Session timeout of one-off readers (replay, tools, benchmarks, tests): nothing fails
/// over to them, so librdkafka's own default (45 s in 2.x) would do; 30 s is what Gantry's
/// readers used before the timeout became configurable.
const READER_SESSION_TIMEOUT_MS: u64 = 30_000;

/// [`consumer_config`] for a one-off reader (replay, tools, benchmarks, tests).
pub fn reader_config(brokers: &str, group_id: &str) -> ClientConfig {
    consumer_config(brokers, group_id, READER_SESSION_TIMEOUT_MS)
}

/// Consumer settings, each chosen for this workload. `session_timeout_ms`: how long the
/// group waits for a member that stopped heartbeating before its partitions go to another
/// member (the failover time after a crash).
pub fn consumer_config(brokers: &str, group_id: &str, session_timeout_ms: u64) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        // Offsets are committed by Gantry after ClickHouse has the batch, never automatically.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the beginning: every retained message is settled.
        .set("auto.offset.reset", "earliest")
        // Range assignment gives partition p of both co-partitioned topics to one member.
        .set("partition.assignment.strategy", "range")
        // End-of-partition events let the merge stop waiting for an idle topic at once.
        .set("enable.partition.eof", "true")
        // Low fetch wait and large fetches: the broker answers as soon as data is there and
        // a fetch carries many lane records (Tansu crawls at ~70k/s with the defaults).
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        // Pre-fetch at most 64 MiB per partition: bounded memory, and the bound is what makes
        // a slow ClickHouse throttle fetching.
        .set("queued.max.messages.kbytes", "65536")
        .set("queued.min.messages", "100000")
        // Recovery of a partition (replaying batches since the checkpoint) happens on assignment.
        .set("max.poll.interval.ms", "600000")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        // librdkafka's default ratio: three heartbeats per session timeout.
        .set("heartbeat.interval.ms", (session_timeout_ms / 3).max(1).to_string());
    c
}

/// How long the status-list producer tries to deliver a message before the send fails (and
/// the lander retries its whole landing step): an outage is waited out by the lander's
/// retries, each with a fresh deadline, instead of by one send hanging for minutes.
pub const STATUS_DELIVERY_TIMEOUT_MS: u64 = 15_000;

/// Settings of the status-list producer. Not idempotent, on purpose: status messages carry
/// states, so a message written twice is harmless (contract §3), while an idempotent producer
/// is tied to producer-id state on the broker, and a broker that loses it in a restart (seen
/// with Tansu) left every send waiting out the delivery timeout, retried, again and again
/// — stalling every partition's landing. Order is kept without idempotence by one request
/// in flight per connection (a card listed, then unlisted, must reach lanes in that order).
pub fn status_producer_config(brokers: &str) -> ClientConfig {
    let mut c = producer_config(brokers);
    c.set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", STATUS_DELIVERY_TIMEOUT_MS.to_string());
    c
}

/// Producer settings for Gantry's own producers (load generator, tests; the status list's
/// derive from them).
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        // The Java client's default partitioner, as the contract requires.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        // Retries must not write a record twice: the idempotent producer numbers batches.
        .set("enable.idempotence", "true")
        // Batch up to 5 ms or 1 MiB per partition: throughput without visible latency.
        .set("linger.ms", "5")
        .set("batch.size", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000");
    c
}

/// Sends one record, waiting while the producer's queue is full (the producer, not the
/// caller's memory, absorbs a slow broker).
pub fn send_waiting(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    mut record: rdkafka::producer::BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Partition count of a topic.
pub fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<usize> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_millis(METADATA_TIMEOUT_MS))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaIoError::NoTopic(topic.into()))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(KafkaIoError::NoTopic(topic.into()));
    }
    Ok(t.partitions().len())
}

/// Refuses to run unless both input topics have the same partition count; returns it.
pub fn check_copartitioned<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    lane: &str,
    acct: &str,
) -> Result<usize> {
    let lane_n = partition_count(consumer, lane)?;
    let acct_n = partition_count(consumer, acct)?;
    if lane_n != acct_n {
        return Err(KafkaIoError::NotCopartitioned {
            lane: lane.into(),
            lane_n,
            acct: acct.into(),
            acct_n,
        });
    }
    Ok(lane_n)
}

/// One message read back: offset, timestamp (ms, if any) and value.
pub struct RangeMessage<'a> {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub payload: &'a [u8],
}

/// End-of-partition, however librdkafka reports it (as an event or as a "global error").
pub fn is_eof(e: &KafkaError) -> bool {
    matches!(e, KafkaError::PartitionEOF(_))
        || e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
}

/// Reads exactly the offsets `[from, to)` of one partition (used to replay batches). Offsets
/// without a message (compaction, transaction markers) are skipped. Each read uses a fresh
/// consumer: re-assigning a partition on a used consumer does not reliably restart fetching
/// at the new offset (seen with librdkafka 2.12), and replay is rare enough not to care.
pub struct RangeReader {
    brokers: String,
    consumer: BaseConsumer<QuietEof>,
}

/// A context that does not log the end-of-partition events range reads run into.
pub struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_eof(&error) {
            tracing::error!(error = %error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for QuietEof {}

impl RangeReader {
    pub fn new(brokers: &str) -> Result<RangeReader> {
        Ok(RangeReader { brokers: brokers.into(), consumer: Self::consumer(brokers)? })
    }

    fn consumer(brokers: &str) -> Result<BaseConsumer<QuietEof>> {
        Ok(reader_config(brokers, "gantry-replay").create_with_context(QuietEof)?)
    }

    /// The first offset still retained.
    pub fn low_watermark(&self, topic: &str, partition: i32) -> Result<i64> {
        Ok(self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_millis(METADATA_TIMEOUT_MS))?
            .0)
    }

    /// Reads exactly the offsets `[from, to)` (see the type's doc).
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        f: impl FnMut(RangeMessage<'_>),
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        self.read_until(topic, partition, from, Until::Offset(to), f).map(|_| ())
    }

    /// Reads what the partition holds from `from` on, as the broker has it now: at most
    /// `max_messages`, stopping at the end of the partition. For a side whose group fetch
    /// has gone silent — Tansu answers a fetch that starts inside a record batch with
    /// nothing when no later batch exists, so after a restart the group consumer can sit
    /// at such an offset forever, neither delivering nor at its end.
    pub fn read_tail(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max_messages: usize,
        f: impl FnMut(RangeMessage<'_>),
    ) -> Result<Tail> {
        self.read_until(topic, partition, from, Until::End { max_messages }, f)
    }

    /// Reads from `from` until `until`. A broker must answer a fetch at an offset inside a
    /// record batch with that whole batch (the client skips the records before the offset).
    /// Some Kafka-compatible brokers (Tansu 0.6 here) answer with the *next* batch instead,
    /// which would silently skip records, or, when there is no next batch, with nothing at
    /// all. So if the first record delivered is past `from`, or nothing comes for
    /// `RANGE_FIRST_RECORD_WAIT_MS`, start further back (the skipped records are filtered
    /// out) until the answer covers `from`, or the start is the oldest retained offset and
    /// the gap is real.
    fn read_until(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        until: Until,
        mut f: impl FnMut(RangeMessage<'_>),
    ) -> Result<Tail> {
        let low = self.low_watermark(topic, partition)?.max(0);
        let mut start = from.max(low);
        let mut step = RANGE_BACKOFF_FIRST_OFFSETS;
        let range = Range { topic, partition, from, until };
        loop {
            match self.read_from(&range, start, start > low, &mut f)? {
                Attempt::Done(tail) => return Ok(tail),
                Attempt::StartEarlier => {
                    start = (from - step).max(low);
                    step *= 4;
                }
            }
        }
    }

    /// One attempt at reading `range`, fetching from `start`. `may_back_off`: an earlier
    /// start exists, so a first record past `from` (or no record at all for a while) means
    /// the broker skipped the batch holding `from`, not that the offsets are gone.
    fn read_from(
        &self,
        range: &Range<'_>,
        start: i64,
        may_back_off: bool,
        f: &mut impl FnMut(RangeMessage<'_>),
    ) -> Result<Attempt> {
        let Range { topic, partition, from, until } = *range;
        let consumer = Self::consumer(&self.brokers)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let (mut at, mut read, mut first, mut last_progress) = (from, 0, true, Instant::now());
        let past = |offset: i64| matches!(until, Until::Offset(to) if offset >= to);
        let first_wait = Duration::from_millis(RANGE_FIRST_RECORD_WAIT_MS);
        while !past(at) {
            match consumer.poll(Duration::from_millis(RANGE_POLL_MS)) {
                Some(Ok(m)) => {
                    if m.topic() != topic || m.partition() != partition {
                        continue;
                    }
                    if first && m.offset() > from && may_back_off {
                        return Ok(Attempt::StartEarlier);
                    }
                    first = false;
                    if past(m.offset()) {
                        break;
                    }
                    if m.offset() >= at {
                        at = m.offset() + 1;
                        last_progress = Instant::now();
                        f(RangeMessage {
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            payload: m.payload().unwrap_or(&[]),
                        });
                        read += 1;
                        if matches!(until, Until::End { max_messages } if read >= max_messages) {
                            break;
                        }
                    }
                }
                Some(Err(e)) if !is_eof(&e) => return Err(e.into()),
                // A tail read ends at the end of the partition. A range read does not: its
                // offsets were recorded by Gantry, so they exist; it waits for a slow broker.
                Some(Err(_)) if matches!(until, Until::End { .. }) => {
                    return Ok(Attempt::Done(Tail::AtEnd));
                }
                _ => {
                    let waited = last_progress.elapsed();
                    if first && may_back_off && waited > first_wait {
                        return Ok(Attempt::StartEarlier);
                    }
                    match until {
                        Until::End { .. } if waited > first_wait => {
                            let tail = if read > 0 { Tail::More } else { Tail::Unknown };
                            return Ok(Attempt::Done(tail));
                        }
                        Until::Offset(to)
                            if waited > Duration::from_millis(RANGE_READ_STALL_MS) =>
                        {
                            let topic = topic.into();
                            return Err(KafkaIoError::RangeStalled {
                                topic,
                                partition,
                                from,
                                to,
                                at,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Attempt::Done(Tail::More))
    }
}

/// How a [`RangeReader::read_tail`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The broker said the partition ends after what was read (end-of-partition at the
    /// position reached): nothing more is there now.
    AtEnd,
    /// `max_messages` were read (or, for a range read, the range); there may be more.
    More,
    /// Nothing more came for a while, and the broker did not say the partition ends
    /// (unreachable, or slow): the caller cannot tell.
    Unknown,
}

/// Where a read of one partition ends.
#[derive(Clone, Copy)]
enum Until {
    /// Before this offset: the offsets were recorded, so they exist (replay, gap fill).
    Offset(i64),
    /// At the end of the partition, or after this many messages (a silent side).
    End { max_messages: usize },
}

/// The offsets from `from` of one partition, up to `until`.
#[derive(Clone, Copy)]
struct Range<'a> {
    topic: &'a str,
    partition: i32,
    from: i64,
    until: Until,
}

/// How one attempt at a range read ended.
enum Attempt {
    /// The read is over (how, for a tail read).
    Done(Tail),
    /// The broker answered from past the range's start: fetch from further back.
    StartEarlier,
}

/// How far before the range a read first backs off (offsets), quadrupling each time: a
/// producer batch is usually a few hundred records.
const RANGE_BACKOFF_FIRST_OFFSETS: i64 = 256;
/// One poll of a range read: short, so a stall or a skipped batch is noticed promptly.
const RANGE_POLL_MS: u64 = 100;

/// One status-list message (contract §3): a card's listing as it stands after a change.
/// Messages carry states, not deltas, so a resend after a crash is harmless.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage<'a> {
    pub card_id: &'a str,
    pub listed: bool,
    /// `insufficient_balance`, `overdrawn`, `lost`, `suspended`, `cancelled`, or the reason
    /// that no longer holds when `listed` is false.
    pub reason: &'a str,
    /// `YYYY-MM-DDTHH:MM:SS±hh:mm` in the network's time zone.
    pub time: &'a str,
}

impl StatusMessage<'_> {
    /// The message's value: `{"cardId","listed","reason","time"}`, escaped by serde.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings and a bool serialises")
    }
}

/// Publishes status-list changes to `gantry.status-list` (key `cardId`).
#[derive(Clone)]
pub struct StatusProducer {
    producer: FutureProducer,
    topic: String,
}

impl StatusProducer {
    pub fn new(brokers: &str, topic: &str) -> Result<StatusProducer> {
        let producer = status_producer_config(brokers).create()?;
        Ok(StatusProducer { producer, topic: topic.into() })
    }

    /// Sends all `(key, value, timestamp)` and waits until the broker has each one.
    pub async fn send_all(&self, msgs: &[(String, String, i64)]) -> Result<()> {
        // Enqueue everything first (librdkafka batches them), then wait for the deliveries.
        let mut pending = Vec::with_capacity(msgs.len());
        for (k, v, ts) in msgs {
            let record = FutureRecord::to(&self.topic)
                .key(k.as_bytes())
                .payload(v.as_bytes())
                .timestamp(*ts);
            match self.producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err((e, _)) => return Err(e.into()),
            }
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }
}

/// The high watermark of a partition as librdkafka last saw it in a fetch response (no
/// request to the broker); `None` before the first fetch of that partition.
///
/// Preferred over [`rdkafka::consumer::Consumer::fetch_watermarks`] (a ListOffsets request)
/// to decide whether a consumer is at the end: it is what the fetches themselves reported,
/// it costs nothing, and some Kafka-compatible brokers answer ListOffsets wrongly (Tansu 0.6
/// answers "latest" with the last record batch's base offset + 1, which made a drained-check
/// stop a run with most of a partition unread).
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed; librdkafka only reads
    // the NUL-terminated topic name and writes the two offsets.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status-list value is exactly the contract's four fields, and stays valid JSON
    /// whatever the card text holds.
    #[test]
    fn status_messages_are_the_contract_fields_as_json() {
        let m = StatusMessage {
            card_id: "32011820220000123456",
            listed: true,
            reason: "insufficient_balance",
            time: "2026-11-10T12:05:00+08:00",
        };
        assert_eq!(
            m.to_json(),
            r#"{"cardId":"32011820220000123456","listed":true,"reason":"insufficient_balance","time":"2026-11-10T12:05:00+08:00"}"#
        );
        let odd = StatusMessage { card_id: "3201\"\\", ..m }.to_json();
        let back: serde_json::Value = serde_json::from_str(&odd).expect("valid JSON");
        assert_eq!(back["cardId"], "3201\"\\");
    }
}
