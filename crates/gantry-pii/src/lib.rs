//! Personal data at rest (contract §5.2). ClickHouse never holds a plate in clear: Gantry
//! writes it sealed, as `plate_enc` = `KEYID:HEX(nonce ‖ ciphertext ‖ tag)` under
//! AES-256-GCM-SIV, and as `plate_hash` = HEX(first 16 bytes of HMAC-SHA-256(lookup key,
//! plate)), so an exact plate can still be found without decrypting anything. Raw bytes
//! kept in `rejects` have every plate value replaced by its sealed form ([`scrub`]).
//!
//! The nonce is the plate's lookup hash, so the same plate seals to the same text under one
//! key. That reveals which rows share a plate, which the lookup hash reveals anyway;
//! GCM-SIV is the mode built to stay safe under such repeated nonces (RFC 8452), and being
//! deterministic it needs no random source and no per-row state: a replay after a crash
//! writes the same bytes as the first run.
//!
//! Keys come from a TOML key file ([`Keyring::load`]): several encryption keys with ids
//! (one `current` for writing; all for reading, so keys can be rotated) and the lookup key.
//! Keys never appear in `Debug` output, logs or errors.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Longest plate sealed, in bytes (the parser's `TEXT_FIELD_BYTES_MAX`; longer is cut).
pub const PLATE_BYTES_MAX: usize = 256;
/// Longest key id, bytes: it prefixes every sealed plate.
pub const KEY_ID_BYTES_MAX: usize = 16;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Bytes of the HMAC kept as the lookup hash: 128 bits, no collision in any real fleet.
pub const LOOKUP_HASH_BYTES: usize = 16;
const SEALED_TEXT_BYTES_MAX: usize =
    KEY_ID_BYTES_MAX + 1 + 2 * (NONCE_BYTES + PLATE_BYTES_MAX + TAG_BYTES);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the PII key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("PII key file: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// Id of the key new plates are sealed with.
    current: String,
    /// 32 bytes, hex: the HMAC key of `plate_hash`. Changing it changes every lookup hash.
    lookup_key: String,
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    /// 32 bytes, hex (AES-256).
    key: String,
}

/// The keys: loaded once at start, shared read-only by every worker.
pub struct Keyring {
    keys: Vec<(String, Aes256GcmSiv)>,
    current: usize,
    lookup: Hmac<Sha256>,
    /// Tells this ring's entries in the per-thread cache from another ring's.
    ring_id: u64,
}

/// Plates whose sealed texts one thread keeps: sealing costs ~600 ns (an HMAC and a
/// GCM-SIV key derivation), a cache hit ~150 ns, and a vehicle crosses several gantries
/// per trip, so most plates repeat within minutes. 65,536 plates of ~130 bytes each:
/// ~8 MiB per thread at most; when full it is emptied and refills.
pub const SEAL_CACHE_PLATES_MAX: usize = 65_536;

static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct SealCache {
    ring_id: u64,
    /// Plate → its `plate_enc` text followed by its `plate_hash` text (the latter is the
    /// last `2 * LOOKUP_HASH_BYTES` bytes).
    sealed: HashMap<Box<[u8]>, Box<[u8]>>,
}

thread_local! {
    static SEAL_CACHE: RefCell<SealCache> = RefCell::new(SealCache::default());
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.0.as_str()).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("current", &self.current_id())
            .finish_non_exhaustive()
    }
}

fn key32(what: &str, text: &str) -> Result<[u8; 32], KeyError> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut k)
        .map_err(|_| KeyError::Invalid(format!("{what} is not 64 hex digits")))?;
    Ok(k)
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
        Keyring::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Keyring, KeyError> {
        // toml's message may quote the offending line, which may hold a key: not passed on.
        let file: KeyFile = toml::from_str(text).map_err(|_| {
            KeyError::Invalid(
                "not valid TOML of `current`, `lookup_key` and `[[keys]]` (id, key)".into(),
            )
        })?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for k in &file.keys {
            let id_ok = !k.id.is_empty()
                && k.id.len() <= KEY_ID_BYTES_MAX
                && k.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok || keys.iter().any(|(id, _)| id == &k.id) {
                return Err(KeyError::Invalid(format!(
                    "key id `{}`: 1–{KEY_ID_BYTES_MAX} of [A-Za-z0-9_-], unique",
                    k.id
                )));
            }
            let key = key32(&format!("key `{}`", k.id), &k.key)?;
            keys.push((k.id.clone(), Aes256GcmSiv::new(&key.into())));
        }
        let current = keys.iter().position(|(id, _)| *id == file.current).ok_or_else(|| {
            KeyError::Invalid(format!("current key `{}` is not among the keys", file.current))
        })?;
        let lookup = key32("lookup_key", &file.lookup_key)?;
        let lookup =
            <Hmac<Sha256> as Mac>::new_from_slice(&lookup).expect("HMAC takes any key length");
        let ring_id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Keyring { keys, current, lookup, ring_id })
    }

    pub fn current_id(&self) -> &str {
        &self.keys[self.current].0
    }

    /// The raw lookup hash of a plate.
    fn lookup_bytes(&self, plate: &[u8]) -> [u8; LOOKUP_HASH_BYTES] {
        let mut mac = self.lookup.clone();
        mac.update(plate);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; LOOKUP_HASH_BYTES];
        out.copy_from_slice(&full[..LOOKUP_HASH_BYTES]);
        out
    }

    /// The `plate_hash` text of a plate (what a lookup by plate compares with).
    pub fn lookup_hash(&self, plate: &str) -> String {
        hex::encode(self.lookup_bytes(plate.as_bytes()))
    }

    /// Seals `plate` into `buf`: (`plate_enc`, `plate_hash`) texts, without allocating. An
    /// empty plate seals to two empty texts.
    pub fn seal<'b>(&self, plate: &[u8], buf: &'b mut SealBuf) -> (&'b [u8], &'b [u8]) {
        if plate.is_empty() {
            return (&[], &[]);
        }
        let plate = &plate[..plate.len().min(PLATE_BYTES_MAX)];
        let hash = self.lookup_bytes(plate);
        let nonce = &hash[..NONCE_BYTES];
        let mut raw = [0u8; NONCE_BYTES + PLATE_BYTES_MAX + TAG_BYTES];
        raw[..NONCE_BYTES].copy_from_slice(nonce);
        let body_end = NONCE_BYTES + plate.len();
        raw[NONCE_BYTES..body_end].copy_from_slice(plate);
        let (id, cipher) = &self.keys[self.current];
        let tag = cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(nonce),
                id.as_bytes(),
                &mut raw[NONCE_BYTES..body_end],
            )
            .expect("GCM-SIV seals any plate up to PLATE_BYTES_MAX");
        raw[body_end..body_end + TAG_BYTES].copy_from_slice(&tag);
        let raw = &raw[..body_end + TAG_BYTES];
        let n = id.len();
        buf.text[..n].copy_from_slice(id.as_bytes());
        buf.text[n] = b':';
        hex::encode_to_slice(raw, &mut buf.text[n + 1..n + 1 + 2 * raw.len()])
            .expect("sized above");
        hex::encode_to_slice(hash, &mut buf.hash).expect("sized above");
        (&buf.text[..n + 1 + 2 * raw.len()], &buf.hash)
    }

    /// Calls `f` with the (`plate_enc`, `plate_hash`) texts of `plate`, from this thread's
    /// cache when it sealed the plate before: the hot path's way to seal. Allocates only for
    /// a plate not in the cache.
    pub fn with_sealed<R>(&self, plate: &[u8], f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        if plate.is_empty() {
            return f(&[], &[]);
        }
        SEAL_CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            if cache.ring_id != self.ring_id {
                cache.sealed.clear();
                cache.ring_id = self.ring_id;
            }
            let split = |both: &[u8]| both.len() - 2 * LOOKUP_HASH_BYTES;
            if let Some(both) = cache.sealed.get(plate) {
                let (enc, hash) = both.split_at(split(both));
                return f(enc, hash);
            }
            // A miss: make room only now, so a hit never empties a full cache.
            if cache.sealed.len() >= SEAL_CACHE_PLATES_MAX {
                cache.sealed.clear();
            }
            let mut buf = SealBuf::default();
            let (enc, hash) = self.seal(plate, &mut buf);
            cache.sealed.insert(plate.into(), [enc, hash].concat().into());
            f(enc, hash)
        })
    }

    /// The plate a `plate_enc` text seals, or why not.
    pub fn open(&self, sealed: &str) -> Result<String, OpenError> {
        if sealed.is_empty() {
            return Ok(String::new());
        }
        let (id, body) = sealed.split_once(':').ok_or(OpenError::Malformed)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let raw = hex::decode(body).map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_BYTES + TAG_BYTES {
            return Err(OpenError::Malformed);
        }
        let (nonce, rest) = raw.split_at(NONCE_BYTES);
        let (ct, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let mut plain = ct.to_vec();
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                id.as_bytes(),
                &mut plain,
                tag.into(),
            )
            .map_err(|_| OpenError::Forged)?;
        String::from_utf8(plain).map_err(|_| OpenError::Malformed)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed plate")]
    Malformed,
    #[error("sealed with key `{0}`, which is not in the key file")]
    UnknownKey(String),
    #[error("does not authenticate (wrong key or altered)")]
    Forged,
}

/// Room for one sealed plate's texts (on the stack: sealing allocates nothing).
pub struct SealBuf {
    text: [u8; SEALED_TEXT_BYTES_MAX],
    hash: [u8; 2 * LOOKUP_HASH_BYTES],
}

impl Default for SealBuf {
    fn default() -> SealBuf {
        SealBuf { text: [0; SEALED_TEXT_BYTES_MAX], hash: [0; 2 * LOOKUP_HASH_BYTES] }
    }
}

/// JSON keys whose string value is a plate (lane records' and `open` events' field names).
const PLATE_KEYS: [&[u8]; 2] = [b"\"vehiclePlate\"", b"\"plate\""];

/// `raw` with the string value of every plate key replaced by its sealed text (by an empty
/// string without a keyring). Works on broken JSON too — that is why it was rejected — by
/// finding each key, the `:` and the opening quote after it, and the closing quote (a
/// backslash escapes); a value cut off by the 4 KiB limit is replaced to the end.
pub fn scrub<'r>(raw: &'r [u8], keys: Option<&Keyring>) -> std::borrow::Cow<'r, [u8]> {
    if next_plate(raw, 0).is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some((start, end)) = next_plate(raw, i) {
        out.extend_from_slice(&raw[i..start]);
        if let Some(k) = keys {
            let mut buf = SealBuf::default();
            let (text, _) = k.seal(&raw[start..end], &mut buf);
            out.extend_from_slice(text);
        }
        i = end;
    }
    out.extend_from_slice(&raw[i..]);
    std::borrow::Cow::Owned(out)
}

/// The byte range of the next plate value at or after `from`.
fn next_plate(raw: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for key in PLATE_KEYS {
        let mut at = from;
        while let Some(p) = find(&raw[at..], key).map(|p| p + at) {
            at = p + key.len();
            let mut j = at;
            while j < raw.len() && raw[j].is_ascii_whitespace() {
                j += 1;
            }
            if raw.get(j) != Some(&b':') {
                continue;
            }
            j += 1;
            while j < raw.len() && raw[j].is_ascii_whitespace() {
                j += 1;
            }
            if raw.get(j) != Some(&b'"') {
                continue;
            }
            let start = j + 1;
            let mut end = start;
            while end < raw.len() && raw[end] != b'"' {
                end += if raw[end] == b'\\' { 2 } else { 1 };
            }
            let end = end.min(raw.len());
            if best.is_none_or(|(s, _)| start < s) {
                best = Some((start, end));
            }
            break;
        }
    }
    best
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A key file in the format [`Keyring::load`] reads, for examples and tests. Its keys are
/// public: never use it for real data.
pub const TEST_KEYS: &str = "current = \"k2\"\nlookup_key = \"0101010101010101010101010101010101010101010101010101010101010101\"\n\
    [[keys]]\nid = \"k1\"\nkey = \"1111111111111111111111111111111111111111111111111111111111111111\"\n\
    [[keys]]\nid = \"k2\"\nkey = \"2222222222222222222222222222222222222222222222222222222222222222\"\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_seal_deterministically_and_open_with_any_key_of_the_ring() {
        let k = Keyring::from_toml(TEST_KEYS).unwrap();
        let mut buf = SealBuf::default();
        let (enc, hash) = k.seal("苏A12345_0".as_bytes(), &mut buf);
        let (enc, hash) = (
            std::str::from_utf8(enc).unwrap().to_string(),
            std::str::from_utf8(hash).unwrap().to_string(),
        );
        assert!(enc.starts_with("k2:"));
        assert!(!enc.contains("12345"));
        assert_eq!(hash, k.lookup_hash("苏A12345_0"));
        assert_eq!(hash.len(), 32);
        let mut buf2 = SealBuf::default();
        assert_eq!(k.seal("苏A12345_0".as_bytes(), &mut buf2).0, enc.as_bytes(), "deterministic");
        assert_eq!(k.open(&enc).unwrap(), "苏A12345_0");
        // Rotated: a ring whose current key is k1 still opens what k2 sealed.
        let rotated =
            Keyring::from_toml(&TEST_KEYS.replace("current = \"k2\"", "current = \"k1\"")).unwrap();
        assert_eq!(rotated.open(&enc).unwrap(), "苏A12345_0");
        // Altered, or under a key not in the ring.
        let mut altered = enc.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.open(std::str::from_utf8(&altered).unwrap()), Err(OpenError::Forged));
        assert_eq!(k.open(&enc.replacen("k2", "k9", 1)), Err(OpenError::UnknownKey("k9".into())));
        assert_eq!(k.seal(b"", &mut buf), (&[][..], &[][..]));
        // The cached path gives the same texts, for this ring and not another's.
        let cached = k.with_sealed("苏A12345_0".as_bytes(), |e, h| (e.to_vec(), h.to_vec()));
        assert_eq!(cached, (enc.clone().into_bytes(), hash.clone().into_bytes()));
        assert_eq!(k.with_sealed("苏A12345_0".as_bytes(), |e, _| e.to_vec()), enc.as_bytes());
        let other =
            Keyring::from_toml(&TEST_KEYS.replace("current = \"k2\"", "current = \"k1\"")).unwrap();
        assert!(other.with_sealed("苏A12345_0".as_bytes(), |e, _| e.starts_with(b"k1:")));
        assert!(!format!("{k:?}").contains("2222"), "no key in Debug");
    }

    #[test]
    fn bad_key_files_are_refused_without_quoting_a_key() {
        for bad in [
            TEST_KEYS.replace("current = \"k2\"", "current = \"k3\""),
            TEST_KEYS
                .replace("2222222222222222222222222222222222222222222222222222222222222222", "22"),
            TEST_KEYS.replace("id = \"k1\"", "id = \"k2\""),
            TEST_KEYS.replace("lookup_key", "lookup"),
        ] {
            let e = Keyring::from_toml(&bad).unwrap_err().to_string();
            assert!(!e.contains("1111") && !e.contains("0101"), "{e}");
        }
    }

    #[test]
    fn scrub_seals_every_plate_in_raw_bytes_even_broken_ones() {
        let k = Keyring::from_toml(TEST_KEYS).unwrap();
        let sealed = |p: &str| {
            let mut b = SealBuf::default();
            String::from_utf8(k.seal(p.as_bytes(), &mut b).0.to_vec()).unwrap()
        };
        let cases: [(&str, String); 5] = [
            (
                r#"{"tradeId":"T","vehiclePlate":"苏A12345_0","fee":1}"#,
                format!(r#"{{"tradeId":"T","vehiclePlate":"{}","fee":1}}"#, sealed("苏A12345_0")),
            ),
            (
                r#"{"plate" : "苏B1_0"}{"vehiclePlate":"苏C2_0""#,
                format!(
                    r#"{{"plate" : "{}"}}{{"vehiclePlate":"{}""#,
                    sealed("苏B1_0"),
                    sealed("苏C2_0")
                ),
            ),
            (r#"{"vehiclePlate":"苏A1"#, format!(r#"{{"vehiclePlate":"{}"#, sealed("苏A1"))),
            (r#"{"vehiclePlate":1,"x":"plate"}"#, r#"{"vehiclePlate":1,"x":"plate"}"#.to_string()),
            (
                r#"{"vehiclePlate":"a\"b"}"#,
                format!(r#"{{"vehiclePlate":"{}"}}"#, sealed(r#"a\"b"#)),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                String::from_utf8(scrub(raw.as_bytes(), Some(&k)).into_owned()).unwrap(),
                want,
                "{raw}"
            );
        }
        assert_eq!(&*scrub(br#"{"vehiclePlate":"X1"}"#, None), br#"{"vehiclePlate":""}"#);
    }
}
