//! Card accounts and their balances (contract §1.2, §3 "Debit" and "Status list").
//!
//! Every account is one 32-byte record in fixed-size chunks (no doubling copies as the book
//! grows), found through an open-addressing index of 8-byte slots (fingerprint and position,
//! [`CardIndex`]); customer ids are interned once per customer. Every operation returns what
//! changed so the caller can write the ledger row and, when a card's listing changed, the
//! status-list event.
//!
//! Listing rule: a card whose status is not `active` is listed with its status as reason;
//! otherwise a stored-value card below the minimum balance is listed `insufficient_balance`
//! and a postpaid card below `−creditLimit` is listed `overdrawn`. A change of (listed,
//! reason) is one [`StatusChange`]; an unlisting carries the reason that was cleared.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{Reader, StateError, Writer};
use crate::hint::prefetch;
use crate::record::{CardId, CardStatus, CardType};
use crate::reject::RejectReason;

/// Accounts per storage chunk: 64 Ki × 32 B = 2 MiB, large enough that chunk bookkeeping is
/// noise, small enough that the last, partly filled chunk wastes little.
const CHUNK_ACCOUNTS: usize = 1 << 16;

/// Why a card is on the status list (状态名单).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ListReason {
    InsufficientBalance = 1,
    Overdrawn = 2,
    Lost = 3,
    Suspended = 4,
    Cancelled = 5,
}

impl ListReason {
    pub fn code(self) -> &'static str {
        match self {
            ListReason::InsufficientBalance => "insufficient_balance",
            ListReason::Overdrawn => "overdrawn",
            ListReason::Lost => "lost",
            ListReason::Suspended => "suspended",
            ListReason::Cancelled => "cancelled",
        }
    }

    fn from_u8(v: u8) -> Option<ListReason> {
        Some(match v {
            1 => ListReason::InsufficientBalance,
            2 => ListReason::Overdrawn,
            3 => ListReason::Lost,
            4 => ListReason::Suspended,
            5 => ListReason::Cancelled,
            _ => return None,
        })
    }
}

/// A change of a card's listing, to publish to `gantry.status-list` and `status_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub card_id: CardId,
    pub listed: bool,
    pub reason: ListReason,
}

/// One card account: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    card_lo: u64,
    pub balance: i64,
    /// Postpaid credit limit in fen (0 for stored-value cards).
    pub credit_limit: i32,
    /// Index into the customer directory.
    customer: u32,
    card_hi: u8,
    card_type: u8,
    pub vehicle_type: u8,
    status: u8,
    /// 0, or the [`ListReason`] the card is listed for.
    listed: u8,
}

const _: () = assert!(std::mem::size_of::<Account>() == 32);

impl Account {
    pub fn card_id(&self) -> CardId {
        CardId::from_parts(self.card_lo, self.card_hi)
    }
    pub fn card_type(&self) -> CardType {
        if self.card_type == CardType::Postpaid as u8 {
            CardType::Postpaid
        } else {
            CardType::StoredValue
        }
    }
    pub fn status(&self) -> CardStatus {
        CardStatus::from_u8(self.status).unwrap_or(CardStatus::Active)
    }
    pub fn listed(&self) -> Option<ListReason> {
        ListReason::from_u8(self.listed)
    }
    pub fn customer_index(&self) -> u32 {
        self.customer
    }
}

/// What a balance movement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Movement {
    pub balance_after: i64,
    pub customer: u32,
    pub card_type: CardType,
    /// Listed before the movement.
    pub was_listed: bool,
    pub change: Option<StatusChange>,
}

pub struct Accounts {
    chunks: Vec<Vec<Account>>,
    len: u32,
    index: CardIndex,
    customers: Vec<Box<str>>,
    customer_index: HashTable<u32>,
    /// A stored-value card below this is listed `insufficient_balance` (fen; default 0).
    min_balance_fen: i64,
}

/// Most cards [`Accounts::warm`] takes at once (more are not warmed): as many as the
/// engine's warm-up group can hold.
pub const WARM_CARDS_MAX: usize = crate::engine::WARM_GROUP_CAPACITY;

#[inline]
fn card_hash(c: CardId) -> u64 {
    let (lo, hi) = c.parts();
    // Card ids are not adversarial; a multiply and two xor-shifts spread their digits over
    // both halves (the low half picks the slot, the high half is the fingerprint).
    let h = (lo ^ ((hi as u64) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let h = (h ^ (h >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// Card → account position: open addressing with linear probing, at most 4/5 full (10–20
/// bytes per account; a hit probes 3 slots on average at the fullest, a cache line or two).
/// A slot is the card hash's upper 32 bits (a fingerprint) and the position + 1 (0: empty),
/// so the slot of a card is known from its hash alone and can be prefetched, and a lookup
/// reads the account only when the fingerprint matches. Accounts are never removed.
struct CardIndex {
    slots: Vec<u64>,
    len: usize,
}

/// Slots of an index that has never held a card.
const CARD_INDEX_SLOTS_MIN: usize = 16;

impl CardIndex {
    fn new() -> CardIndex {
        CardIndex { slots: vec![0; CARD_INDEX_SLOTS_MIN], len: 0 }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn slot_ptr(&self, hash: u64) -> *const u8 {
        self.slots.as_ptr().wrapping_add(hash as usize & self.mask()) as *const u8
    }

    #[inline]
    fn entry(hash: u64, pos: u32) -> u64 {
        (hash & 0xFFFF_FFFF_0000_0000) | (pos as u64 + 1)
    }

    #[inline]
    fn find(&self, hash: u64, mut is_card: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = hash as usize & self.mask();
        loop {
            let e = self.slots[i];
            if e == 0 {
                return None;
            }
            if (e ^ hash) >> 32 == 0 && is_card(e as u32 - 1) {
                return Some(e as u32 - 1);
            }
            i = (i + 1) & self.mask();
        }
    }

    /// The first position whose fingerprint matches `hash`, without confirming the card.
    #[inline]
    fn probable(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Adds a position known not to be in the index; `rehash` gives a position's hash.
    fn insert(&mut self, hash: u64, pos: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            let doubled = vec![0; self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, doubled);
            for e in old.into_iter().filter(|&e| e != 0) {
                let p = e as u32 - 1;
                self.place(rehash(p), p);
            }
        }
        self.place(hash, pos);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, pos: u32) {
        let mut i = hash as usize & self.mask();
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = Self::entry(hash, pos);
    }

    fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

impl Accounts {
    pub fn new(min_balance_fen: i64) -> Accounts {
        Accounts {
            chunks: Vec::new(),
            len: 0,
            index: CardIndex::new(),
            customers: Vec::new(),
            customer_index: HashTable::new(),
            min_balance_fen,
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn at(chunks: &[Vec<Account>], i: u32) -> &Account {
        &chunks[i as usize / CHUNK_ACCOUNTS][i as usize % CHUNK_ACCOUNTS]
    }

    #[inline]
    fn position(&self, card: CardId) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(card_hash(card), |i| Self::at(chunks, i).card_id() == card)
    }

    #[inline]
    fn get_mut(&mut self, i: u32) -> &mut Account {
        &mut self.chunks[i as usize / CHUNK_ACCOUNTS][i as usize % CHUNK_ACCOUNTS]
    }

    pub fn get(&self, card: CardId) -> Option<&Account> {
        self.position(card).map(|i| Self::at(&self.chunks, i))
    }

    /// Loads the cache lines that settling these cards will touch, and changes nothing: for
    /// each card its index slot, its account, its customer entry and the customer text. The
    /// four are a chain (each address is read from the one before), so they are fetched in
    /// four passes over all the cards, each pass issuing one independent prefetch per card:
    /// the CPU has every card's miss of a pass in flight at once, where card by card it would
    /// wait for each in turn. Cards past the first [`WARM_CARDS_MAX`] are not warmed.
    pub fn warm(&self, cards: &[CardId]) {
        let cards = &cards[..cards.len().min(WARM_CARDS_MAX)];
        let mut hashes = [0u64; WARM_CARDS_MAX];
        for (h, &c) in hashes.iter_mut().zip(cards) {
            *h = card_hash(c);
            prefetch(self.index.slot_ptr(*h));
        }
        // The first position with the card's fingerprint: almost always the card's own
        // (reading the account to make sure would wait for it here).
        let mut accounts: [Option<&Account>; WARM_CARDS_MAX] = [None; WARM_CARDS_MAX];
        for (a, &h) in accounts.iter_mut().zip(&hashes[..cards.len()]) {
            *a = self.index.probable(h).map(|i| Self::at(&self.chunks, i));
            if let Some(a) = *a {
                prefetch(a);
            }
        }
        let customers = || {
            accounts[..cards.len()]
                .iter()
                .flatten()
                .filter_map(|a| self.customers.get(a.customer as usize))
        };
        for c in customers() {
            prefetch(c as *const Box<str>);
        }
        for c in customers() {
            prefetch(c.as_ptr());
        }
    }

    pub fn customer(&self, index: u32) -> &str {
        &self.customers[index as usize]
    }

    fn intern_customer(&mut self, id: &str) -> u32 {
        let h = xxh3_64(id.as_bytes());
        let customers = &self.customers;
        if let Some(&i) = self.customer_index.find(h, |&i| &*customers[i as usize] == id) {
            return i;
        }
        let i = self.customers.len() as u32;
        self.customers.push(id.into());
        let customers = &self.customers;
        self.customer_index.insert_unique(h, i, |&j| xxh3_64(customers[j as usize].as_bytes()));
        i
    }

    fn push(&mut self, a: Account) -> u32 {
        if self.len as usize == self.chunks.len() * CHUNK_ACCOUNTS {
            self.chunks.push(Vec::with_capacity(CHUNK_ACCOUNTS));
        }
        self.chunks.last_mut().expect("a chunk with room").push(a);
        let i = self.len;
        self.len += 1;
        let chunks = &self.chunks;
        self.index.insert(card_hash(a.card_id()), i, |j| card_hash(Self::at(chunks, j).card_id()));
        i
    }

    fn listing(&self, a: &Account) -> Option<ListReason> {
        match a.status() {
            CardStatus::Lost => Some(ListReason::Lost),
            CardStatus::Suspended => Some(ListReason::Suspended),
            CardStatus::Cancelled => Some(ListReason::Cancelled),
            CardStatus::Active => match a.card_type() {
                CardType::StoredValue if a.balance < self.min_balance_fen => {
                    Some(ListReason::InsufficientBalance)
                }
                CardType::Postpaid if a.balance < -(a.credit_limit as i64) => {
                    Some(ListReason::Overdrawn)
                }
                _ => None,
            },
        }
    }

    /// Re-derives the listing of account `i` and records a change.
    fn relist(&mut self, i: u32) -> Option<StatusChange> {
        let a = *Self::at(&self.chunks, i);
        let now = self.listing(&a);
        let before = a.listed();
        if now == before {
            return None;
        }
        self.get_mut(i).listed = now.map_or(0, |r| r as u8);
        Some(StatusChange {
            card_id: a.card_id(),
            listed: now.is_some(),
            reason: now.or(before).expect("one of them is listed"),
        })
    }

    /// Opens a card. A second `open` of the same card is [`RejectReason::CardExists`].
    pub fn open(
        &mut self,
        card: CardId,
        customer_id: &str,
        card_type: CardType,
        vehicle_type: u8,
        balance: i64,
        credit_limit: i64,
    ) -> Result<Movement, RejectReason> {
        if self.position(card).is_some() {
            return Err(RejectReason::CardExists);
        }
        let (card_lo, card_hi) = card.parts();
        let customer = self.intern_customer(customer_id);
        let i = self.push(Account {
            card_lo,
            balance,
            credit_limit: credit_limit.clamp(0, i32::MAX as i64) as i32,
            customer,
            card_hi,
            card_type: card_type as u8,
            vehicle_type,
            status: CardStatus::Active as u8,
            listed: 0,
        });
        let change = self.relist(i);
        Ok(Movement { balance_after: balance, customer, card_type, was_listed: false, change })
    }

    /// Adds `amount` (negative for a debit) to a card's balance. `None` for an unknown card.
    #[inline]
    pub fn apply(&mut self, card: CardId, amount: i64) -> Option<Movement> {
        let i = self.position(card)?;
        let a = self.get_mut(i);
        // Amounts are at most `AMOUNT_ABS_MAX_FEN` (10¹² fen, the parser's bound; fees are far
        // smaller), so leaving i64's range takes millions of maximal movements on one card.
        // Checked all the same: a debug build stops there, a release build saturates rather
        // than wrapping a balance to the other sign.
        let balance = a.balance.checked_add(amount);
        debug_assert!(balance.is_some(), "the balance of a card left i64's range");
        a.balance = balance.unwrap_or(if amount > 0 { i64::MAX } else { i64::MIN });
        let (balance_after, customer, card_type, was_listed) =
            (a.balance, a.customer, a.card_type(), a.listed != 0);
        let change = self.relist(i);
        Some(Movement { balance_after, customer, card_type, was_listed, change })
    }

    /// Sets a card's status. `None` for an unknown card; `Some(None)` if the listing did not
    /// change (e.g. the same status twice).
    pub fn set_status(&mut self, card: CardId, status: CardStatus) -> Option<Option<StatusChange>> {
        let i = self.position(card)?;
        self.get_mut(i).status = status as u8;
        Some(self.relist(i))
    }

    /// Heap bytes held for accounts (chunks and index), excluding the customer directory.
    pub fn account_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * std::mem::size_of::<Account>()).sum::<usize>()
            + self.index.allocated_bytes()
    }

    /// Heap bytes held by the customer directory.
    pub fn customer_bytes(&self) -> usize {
        self.customers.capacity() * std::mem::size_of::<Box<str>>()
            + self.customers.iter().map(|c| c.len()).sum::<usize>()
            + self.customer_index.allocation_size()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.chunks.iter().flatten()
    }

    /// Appends the state to `out` (checkpoints).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out, b"GAC1");
        w.i64(self.min_balance_fen);
        w.u64(self.customers.len() as u64);
        for c in &self.customers {
            w.str(c);
        }
        w.u64(self.len as u64);
        for a in self.iter() {
            w.u64(a.card_lo);
            w.i64(a.balance);
            w.i32(a.credit_limit);
            w.u32(a.customer);
            for b in [a.card_hi, a.card_type, a.vehicle_type, a.status, a.listed] {
                w.u8(b);
            }
        }
    }

    pub fn read_from(r: &mut Reader<'_>) -> Result<Accounts, StateError> {
        r.magic(b"GAC1")?;
        let mut acc = Accounts::new(r.i64()?);
        let n = r.len(4)?;
        for _ in 0..n {
            let c = r.str()?;
            let h = xxh3_64(c.as_bytes());
            acc.customers.push(c.into());
            let customers = &acc.customers;
            acc.customer_index.insert_unique(h, customers.len() as u32 - 1, |&j| {
                xxh3_64(customers[j as usize].as_bytes())
            });
        }
        let n = r.len(29)?;
        for _ in 0..n {
            let a = Account {
                card_lo: r.u64()?,
                balance: r.i64()?,
                credit_limit: r.i32()?,
                customer: r.u32()?,
                card_hi: r.u8()?,
                card_type: r.u8()?,
                vehicle_type: r.u8()?,
                status: r.u8()?,
                listed: r.u8()?,
            };
            if a.customer as usize >= acc.customers.len() {
                return Err(StateError::Corrupt("account names an unknown customer"));
            }
            acc.push(a);
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> CardId {
        CardId::parse(s).unwrap()
    }

    #[test]
    fn stored_value_arrears_and_listing() {
        let mut a = Accounts::new(0);
        let c = card("32010000000000000001");
        let m = a.open(c, "C1", CardType::StoredValue, 1, 1000, 0).unwrap();
        assert_eq!((m.balance_after, m.change), (1000, None));
        assert_eq!(a.open(c, "C1", CardType::StoredValue, 1, 0, 0), Err(RejectReason::CardExists));
        assert_eq!(a.apply(c, -1000).unwrap().change, None, "exactly 0 is not below the minimum");
        let m = a.apply(c, -1).unwrap();
        assert_eq!(m.balance_after, -1);
        assert_eq!(
            m.change,
            Some(StatusChange {
                card_id: c,
                listed: true,
                reason: ListReason::InsufficientBalance
            })
        );
        assert_eq!(a.apply(c, -500).unwrap().change, None, "already listed");
        let m = a.apply(c, 501).unwrap();
        assert_eq!((m.balance_after, m.was_listed), (0, true));
        assert_eq!(
            m.change,
            Some(StatusChange {
                card_id: c,
                listed: false,
                reason: ListReason::InsufficientBalance
            })
        );
        assert!(a.apply(card("1"), -5).is_none());
    }

    #[test]
    fn postpaid_credit_limit() {
        let mut a = Accounts::new(0);
        let c = card("32020000000000000002");
        a.open(c, "C2", CardType::Postpaid, 1, 0, 5000).unwrap();
        assert_eq!(a.apply(c, -5000).unwrap().change, None);
        let m = a.apply(c, -1).unwrap();
        assert_eq!(m.change.map(|c| (c.listed, c.reason)), Some((true, ListReason::Overdrawn)));
        let m = a.apply(c, 1).unwrap();
        assert_eq!(m.change.map(|c| (c.listed, c.reason)), Some((false, ListReason::Overdrawn)));
    }

    #[test]
    fn status_reasons_take_precedence() {
        let mut a = Accounts::new(100);
        let c = card("32010000000000000003");
        let m = a.open(c, "C3", CardType::StoredValue, 1, 50, 0).unwrap();
        assert_eq!(
            m.change.map(|c| (c.listed, c.reason)),
            Some((true, ListReason::InsufficientBalance)),
            "opened below the minimum"
        );
        let ch = a.set_status(c, CardStatus::Lost).unwrap().unwrap();
        assert_eq!((ch.listed, ch.reason), (true, ListReason::Lost));
        assert_eq!(a.set_status(c, CardStatus::Lost), Some(None));
        assert_eq!(a.apply(c, 1000).unwrap().change, None, "still lost");
        let ch = a.set_status(c, CardStatus::Active).unwrap().unwrap();
        assert_eq!((ch.listed, ch.reason), (false, ListReason::Lost));
        for (s, r) in [
            (CardStatus::Suspended, ListReason::Suspended),
            (CardStatus::Cancelled, ListReason::Cancelled),
        ] {
            assert_eq!(a.set_status(c, s).unwrap().map(|c| c.reason), Some(r));
        }
        assert_eq!(a.set_status(card("9"), CardStatus::Lost), None);
    }

    #[test]
    fn every_card_is_found_and_no_other() {
        let mut a = Accounts::new(0);
        // Consecutive ids (as issuers hand them out) and scattered ones, across many doublings.
        let ids: Vec<String> = (0..30_000u64)
            .map(|i| format!("3201{:016}", i))
            .chain((0..30_000u64).map(|i| format!("{}", i * 7_919_113 + 11)))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            a.open(card(id), "CU1", CardType::StoredValue, 1, i as i64, 0).unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(a.get(card(id)).map(|x| x.balance), Some(i as i64), "{id}");
            // The warm-up's unconfirmed guess is the card's own position here.
            assert_eq!(a.index.probable(card_hash(card(id))), Some(i as u32));
        }
        for i in 0..30_000u64 {
            assert!(a.get(card(&format!("3202{:016}", i))).is_none());
        }
        assert!(a.open(card(&ids[7]), "CU2", CardType::StoredValue, 1, 0, 0).is_err());
        let cards: Vec<CardId> = ids.iter().take(40).map(|i| card(i)).collect();
        a.warm(&cards);
    }

    #[test]
    fn state_round_trips_and_memory() {
        let mut a = Accounts::new(0);
        let n = 200_000u64;
        for i in 0..n {
            let c = card(&format!("3201{:016}", i));
            a.open(c, &format!("CU{}", i / 2), CardType::StoredValue, 1, i as i64, 0).unwrap();
        }
        a.apply(card("32010000000000000007"), -100).unwrap();
        let mut buf = Vec::new();
        a.write_to(&mut buf);
        let b = Accounts::read_from(&mut Reader::new(&buf)).unwrap();
        assert_eq!(b.len(), n as usize);
        assert!(a.iter().eq(b.iter()));
        let x = b.get(card("32010000000000000007")).unwrap();
        assert_eq!(
            (x.balance, x.listed(), b.customer(x.customer_index())),
            (-93, Some(ListReason::InsufficientBalance), "CU3")
        );
        let per_account = a.account_bytes() as f64 / n as f64;
        assert!(per_account <= 64.0, "{per_account} bytes per account");
    }
}
