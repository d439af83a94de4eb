//! Transaction keys (RFC 3261 §17.1.3, §17.2.3): what a message is matched
//! to its transaction by.

use crate::sip::{Message, Via, BRANCH_COOKIE};
use smallvec::SmallVec;

/// The method part of a key: an ACK belongs to the INVITE transaction it
/// acknowledges, a CANCEL has its own (§9.2, §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyMethod {
    Invite,
    Cancel,
    Other(Box<[u8]>),
}

impl KeyMethod {
    pub fn of(method: &[u8]) -> KeyMethod {
        match method {
            b"INVITE" | b"ACK" => KeyMethod::Invite,
            b"CANCEL" => KeyMethod::Cancel,
            m => KeyMethod::Other(m.into()),
        }
    }
}

/// A transaction key. Server keys are the received top Via's branch and
/// sent-by with the method (RFC 3261 branches), or, for a request from an
/// RFC 2543 element (no magic cookie, or the cookie alone), the dialog
/// identifiers and CSeq number with the sent-by. Client keys are our own
/// branch with the CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    method: KeyMethod,
    /// Inline up to 64 bytes, which holds a branch and sent-by of the
    /// usual lengths: keys are made for every message and kept twice (the
    /// index and the transaction), and allocating them showed in the
    /// reject path.
    id: SmallVec<[u8; 64]>,
}

impl TxnKey {
    /// The server transaction `msg` belongs to (§17.2.3).
    pub fn server(msg: &Message, via: &Via<'_>, method: &[u8]) -> TxnKey {
        let branch = via
            .branch
            .filter(|b| b.starts_with(BRANCH_COOKIE) && b.len() > BRANCH_COOKIE.len());
        let mut id = SmallVec::new();
        match branch {
            Some(b) => id.extend_from_slice(b),
            None => {
                // §17.2.3 for RFC 2543 requests: To tag is left out so that
                // the ACK of a non-2xx (which has one) matches its INVITE.
                id.push(b'|');
                id.extend_from_slice(msg.call_id().unwrap_or_default());
                id.push(b'|');
                id.extend_from_slice(msg.from_tag().unwrap_or_default());
                id.push(b'|');
                let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
                id.extend_from_slice(cseq.to_string().as_bytes());
            }
        }
        id.push(b'|');
        id.extend_from_slice(via.sent_by);
        TxnKey {
            method: KeyMethod::of(method),
            id,
        }
    }

    /// A client transaction of ours (§17.1.3): our branch and the method.
    pub fn client(branch: &[u8], method: &[u8]) -> TxnKey {
        TxnKey {
            method: KeyMethod::of(method),
            id: SmallVec::from_slice(branch),
        }
    }

    /// The same transaction identifier with another method: the INVITE a
    /// CANCEL cancels shares its branch (§9.1).
    pub fn with_method(&self, method: KeyMethod) -> TxnKey {
        TxnKey {
            method,
            id: self.id.clone(),
        }
    }

    pub fn method(&self) -> &KeyMethod {
        &self.method
    }

    /// A To tag for responses generated here, derived from the key so that
    /// a retransmitted request gets a byte-identical answer.
    pub fn local_tag(&self) -> LocalTag {
        use std::hash::{Hash, Hasher};
        let mut h = siphasher::sip::SipHasher13::new();
        self.hash(&mut h);
        let mut tag = *b"cg0000000000000000";
        tag[2..].copy_from_slice(crate::text::Hex::padded(h.finish(), 16).as_str().as_bytes());
        LocalTag(tag)
    }
}

/// A To tag of ours: `cg` and 16 hex digits, kept inline because every
/// locally answered request needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTag([u8; 18]);

impl std::ops::Deref for LocalTag {
    type Target = str;
    fn deref(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("cg")
    }
}

/// Transactions by key: which slab slot holds the transaction a message
/// belongs to.
///
/// The key itself stays in the transaction, in its slab; the index holds
/// only the key's hash and the slot, and compares keys through the slab.
/// A map from key to slot held every key twice, 112 bytes a bucket: at
/// 4,000 calls a second about half a million transactions are live (RFC
/// 3261 keeps them 32 s after the final response), so the maps alone
/// were tens of MiB, and a lookup read a cold bucket as well as the
/// transaction it found. Here a bucket is 16 bytes, and removing an entry
/// compares slots, not keys.
///
/// The keys come from the network (Via branches), so the hash is seeded
/// per process; foldhash rather than std's SipHash, which cost more than
/// the lookups themselves (2 % of a loaded proxy).
#[derive(Default)]
pub struct TxnIndex {
    table: hashbrown::HashTable<(u64, usize)>,
    hasher: foldhash::fast::RandomState,
}

impl TxnIndex {
    fn hash(&self, key: &TxnKey) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The slot of the transaction keyed `key`; `key_at` gives the key of
    /// an indexed slot.
    pub fn get<'a>(
        &self,
        key: &TxnKey,
        key_at: impl Fn(usize) -> Option<&'a TxnKey>,
    ) -> Option<usize> {
        let hash = self.hash(key);
        self.table
            .find(hash, |&(h, slot)| h == hash && key_at(slot) == Some(key))
            .map(|&(_, slot)| slot)
    }

    /// Indexes `slot` under `key`, in place of any transaction indexed
    /// under the same key (which stays in its slab, unindexed).
    pub fn insert<'a>(
        &mut self,
        key: &TxnKey,
        slot: usize,
        key_at: impl Fn(usize) -> Option<&'a TxnKey>,
    ) {
        let hash = self.hash(key);
        match self.table.entry(
            hash,
            |&(h, s)| h == hash && key_at(s) == Some(key),
            |&(h, _)| h,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().1 = slot,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((hash, slot));
            }
        }
    }

    /// Removes `slot`, indexed under `key`, if it is still the one indexed
    /// there.
    pub fn remove(&mut self, key: &TxnKey, slot: usize) {
        let hash = self.hash(key);
        if let Ok(o) = self
            .table
            .find_entry(hash, |&(h, s)| h == hash && s == slot)
        {
            o.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(via: &str, method: &str) -> Message {
        Message::parse(Bytes::from(format!(
            "{method} sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@y>;tag=f\r\nTo: <sip:a@b>\r\n\
             Call-ID: c\r\nCSeq: 7 {method}\r\n\r\n"
        )))
        .unwrap()
    }

    fn key(via: &str, method: &str) -> TxnKey {
        let m = msg(via, method);
        let v = m.top_via().unwrap();
        TxnKey::server(&m, &v, method.as_bytes())
    }

    #[test]
    fn server_keys() {
        let via = "SIP/2.0/UDP h:5060;branch=z9hG4bKabc";
        assert_eq!(key(via, "INVITE"), key(via, "ACK"));
        assert_ne!(key(via, "INVITE"), key(via, "CANCEL"));
        assert_ne!(key(via, "BYE"), key(via, "INFO"));
        assert_ne!(
            key(via, "INVITE"),
            key("SIP/2.0/UDP h2:5060;branch=z9hG4bKabc", "INVITE")
        );
        // The magic cookie alone identifies nothing (RFC 4475 §3.2.1):
        // such requests are matched like RFC 2543 ones.
        let bare = key("SIP/2.0/UDP h:5060;branch=z9hG4bK", "INVITE");
        assert_eq!(bare, key("SIP/2.0/UDP h:5060", "INVITE"));
        assert_eq!(
            TxnKey::client(b"z9hG4bKcg1", b"INVITE").with_method(KeyMethod::Cancel),
            TxnKey::client(b"z9hG4bKcg1", b"CANCEL")
        );
    }

    /// Keys are compared through the slab; a key indexed again points at
    /// its new slot, and removing the old slot leaves the new one indexed.
    #[test]
    fn the_index_finds_replaces_and_removes_by_slot() {
        let via = |b: &str| format!("SIP/2.0/UDP h:5060;branch=z9hG4bK{b}");
        let keys: Vec<TxnKey> = (0..500)
            .map(|i| key(&via(&i.to_string()), "INVITE"))
            .collect();
        let mut slab: Vec<Option<TxnKey>> = keys.iter().cloned().map(Some).collect();
        let mut index = TxnIndex::default();
        for (slot, k) in keys.iter().enumerate() {
            index.insert(k, slot, |i| slab.get(i).and_then(Option::as_ref));
        }
        assert_eq!(index.len(), 500);
        fn at(index: &TxnIndex, slab: &[Option<TxnKey>], k: &TxnKey) -> Option<usize> {
            index.get(k, |i| slab.get(i).and_then(Option::as_ref))
        }
        for (slot, k) in keys.iter().enumerate() {
            assert_eq!(at(&index, &slab, k), Some(slot));
        }
        assert_eq!(at(&index, &slab, &key(&via("x"), "INVITE")), None);
        // The same branch with another method is another transaction.
        assert_eq!(at(&index, &slab, &key(&via("7"), "CANCEL")), None);

        // Slot 7's key arrives again and is indexed at a new slot 500.
        slab.push(Some(keys[7].clone()));
        index.insert(&keys[7], 500, |i| slab.get(i).and_then(Option::as_ref));
        assert_eq!(index.len(), 500);
        assert_eq!(at(&index, &slab, &keys[7]), Some(500));
        // The old transaction ends: the new one stays indexed.
        index.remove(&keys[7], 7);
        slab[7] = None;
        assert_eq!(at(&index, &slab, &keys[7]), Some(500));
        index.remove(&keys[7], 500);
        assert_eq!(at(&index, &slab, &keys[7]), None);
        for (slot, k) in keys.iter().enumerate().filter(|&(s, _)| s != 7) {
            index.remove(k, slot);
        }
        assert!(index.is_empty());
    }
}
