//! Shards: with `[kubernetes] shards = N`, the rollouts are split into N shards by a
//! stable hash of `namespace/name`, and each shard has its own Lease. A replica drives
//! the rollouts of the shards it holds, with one daemon per shard, and no other: each
//! rollout is driven by the one holder of its shard's Lease, so Kubernetes' Lease is
//! the only coordination (canaryd adds no consensus of its own).
//!
//! How many shards a replica holds: as many as it can take, but at most its fair share,
//! `ceil(N / live replicas)`, where a replica is live while it renews its member Lease
//! (`<lease.name>-member-<identity>`). A replica above its fair share (another one
//! started) releases one shard per round, so the shards spread out again; a replica that
//! dies stops renewing, its shards' Leases expire, and the survivors, whose fair share
//! grew, take them within the lease's duration.
//!
//! Everything here is pure: [`shard_of`], [`fair_share`] and [`next_move`].

use std::collections::BTreeSet;

use crate::engine::RolloutId;

/// The shard of rollout `namespace/name` among `count`: the first 8 bytes of the
/// SHA-256 of `namespace/name`, as a big-endian integer, modulo `count`. Stable across
/// releases, machines and restarts (unlike Rust's `DefaultHasher`).
pub fn shard_of(namespace: &str, name: &str, count: u32) -> u32 {
    let key = format!("{namespace}/{name}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

/// One shard of `count`: which rollouts a daemon drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    /// 0 to `count - 1`.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Shard {
    /// Whether rollout `id` is in this shard.
    pub fn owns(&self, id: &RolloutId) -> bool {
        shard_of(&id.namespace, &id.name, self.count) == self.index
    }

    /// The name of this shard's Lease, beside the one named `lease`.
    pub fn lease_name(&self, lease: &str) -> String {
        format!("{lease}-shard-{}", self.index)
    }
}

/// The name of replica `identity`'s member Lease, beside the Lease named `lease`.
pub fn member_lease_name(lease: &str, identity: &str) -> String {
    format!("{lease}-member-{identity}")
}

/// The most shards one of `live` replicas holds: `ceil(shards / live)` (every shard,
/// when no replica is known to be live, this one included).
pub fn fair_share(shards: u32, live: u32) -> u32 {
    shards.div_ceil(live.max(1))
}

/// What a replica does about its shards in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// It may take a free shard (it holds fewer than its fair share).
    MayTake,
    /// It holds more than its fair share: it releases this one (its highest).
    Release(u32),
    /// It holds its fair share.
    Hold,
}

/// The move for a replica holding `held` of `shards`, with `live` live replicas.
pub fn next_move(held: &BTreeSet<u32>, shards: u32, live: u32) -> Move {
    let fair = fair_share(shards, live) as usize;
    match held.len() {
        n if n < fair => Move::MayTake,
        n if n > fair => Move::Release(*held.last().expect("more than a fair share is not empty")),
        _ => Move::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 16 hex digits of `printf %s KEY | sha256sum`, computed outside canaryd.
    const SHA256_PREFIXES: [(&str, u64); 3] = [
        ("shop/web", 0x9737_5646_b1de_b3d2),
        ("default/api", 0xd53b_356d_3e1e_9f84),
        ("payments/checkout", 0x78e9_4ec4_236a_acef),
    ];

    #[test]
    fn the_shard_is_the_sha256_prefix_of_namespace_slash_name_modulo_the_count() {
        for (key, prefix) in SHA256_PREFIXES {
            let (namespace, name) = key.split_once('/').unwrap();
            for count in [1, 2, 6, 7, 64] {
                assert_eq!(
                    u64::from(shard_of(namespace, name, count)),
                    prefix % u64::from(count),
                    "{key} of {count}"
                );
            }
        }
    }

    #[test]
    fn a_shard_owns_exactly_the_rollouts_that_hash_to_it() {
        let ids: Vec<RolloutId> = (0..600)
            .map(|i| RolloutId { namespace: format!("ns-{}", i % 7), name: format!("app-{i}") })
            .collect();
        let shards: Vec<Shard> = (0..6).map(|index| Shard { index, count: 6 }).collect();
        for id in &ids {
            assert_eq!(shards.iter().filter(|s| s.owns(id)).count(), 1, "{id:?} is in exactly one shard");
        }
        // Spread: no shard holds fewer than half or more than twice the mean (100).
        for shard in &shards {
            let n = ids.iter().filter(|id| shard.owns(id)).count();
            assert!((50..=200).contains(&n), "shard {} holds {n} of 600", shard.index);
        }
    }

    #[test]
    fn a_replica_takes_up_to_its_fair_share_and_releases_its_highest_shard_above_it() {
        let held = |s: &[u32]| s.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(6, 4), 2);
        assert_eq!(fair_share(6, 0), 6, "no live replica known: this one takes them all");
        assert_eq!(fair_share(7, 2), 4);
        assert_eq!(next_move(&held(&[]), 6, 3), Move::MayTake);
        assert_eq!(next_move(&held(&[0, 4]), 6, 3), Move::Hold);
        // A third replica started beside two that held 3 each.
        assert_eq!(next_move(&held(&[1, 3, 5]), 6, 3), Move::Release(5));
        // One of three died: the survivors may take its shards.
        assert_eq!(next_move(&held(&[0, 4]), 6, 2), Move::MayTake);
    }
}
