//! Room ownership in a cluster, the pure part: what a lease holds, what a
//! node does when the room it wants is already leased, where a new room
//! goes, and the table of leases this node holds. No I/O; the shell
//! (`cluster::Cluster`) talks to Redis and passes time in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::room::RoomKey;

/// A lease's value in the store: the owner and its fencing token. Tokens
/// come from one counter, so a later owner always has a larger one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseValue {
    pub node: String,
    pub token: u64,
}

impl LeaseValue {
    /// `"<node> <token>"` (node ids have no spaces).
    pub(crate) fn parse(s: &str) -> Option<LeaseValue> {
        let (node, token) = s.rsplit_once(' ')?;
        if node.is_empty() || node.contains(' ') {
            return None;
        }
        Some(LeaseValue {
            node: node.to_string(),
            token: token.parse().ok()?,
        })
    }

    pub(crate) fn encode(&self) -> String {
        format!("{} {}", self.node, self.token)
    }
}

/// What to do about a lease someone holds on a room this node was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WhenHeld {
    /// Replace it (only if it still holds exactly what was read).
    TakeOver,
    /// The room runs on that node.
    Elsewhere(String),
}

/// `current` is the lease's value as read (`None`: unreadable). A lease
/// naming this node that this node's table does not hold is from an
/// earlier life of the node (killed and restarted faster than the lease
/// expires): nothing runs the room, so it is taken over at once rather
/// than refused until it expires. A lease of a node whose heartbeat has
/// stopped is taken over too.
pub(crate) fn when_held(current: Option<&LeaseValue>, me: &str, owner_alive: bool) -> WhenHeld {
    match current {
        None => WhenHeld::TakeOver,
        Some(v) if v.node == me || !owner_alive => WhenHeld::TakeOver,
        Some(v) => WhenHeld::Elsewhere(v.node.clone()),
    }
}

/// A node's record in the registry, rewritten at every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub node: String,
    pub http: String,
    pub rtmp: String,
    /// Rooms whose lease it holds.
    pub rooms: u64,
    /// Relay tasks running.
    pub tasks: u64,
    /// Admission budget and the part in use, in cores.
    pub budget: f64,
    pub budget_in_use: f64,
    /// When it was written, unix ms.
    pub at_ms: u64,
}

impl NodeRecord {
    fn headroom(&self) -> f64 {
        self.budget - self.budget_in_use
    }
}

/// Where a new room goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Placement {
    Here,
    /// Another live node has budget left and this one has none.
    There(NodeRecord),
    /// No node has budget left.
    Nowhere,
}

/// The receiving node if it has budget left, else the live node with the
/// most left (ties: the fewest rooms, then the name, so every node picks
/// the same one).
pub(crate) fn place(me: &NodeRecord, others: &[NodeRecord]) -> Placement {
    if me.headroom() > 0.0 {
        return Placement::Here;
    }
    others
        .iter()
        .filter(|n| n.node != me.node && n.headroom() > 0.0)
        .min_by(|a, b| {
            b.headroom()
                .total_cmp(&a.headroom())
                .then(a.rooms.cmp(&b.rooms))
                .then(a.node.cmp(&b.node))
        })
        .map_or(Placement::Nowhere, |n| Placement::There(n.clone()))
}

#[derive(Debug, Clone)]
struct Held {
    value: LeaseValue,
    claimed_at: Instant,
}

/// The leases this node holds. The table is the truth for this process:
/// a room is worked on here only while its lease is in it.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    held: HashMap<RoomKey, Held>,
}

impl Leases {
    pub(crate) fn holds(&self, room: &RoomKey) -> bool {
        self.held.contains_key(room)
    }

    #[cfg(test)]
    pub(crate) fn value(&self, room: &RoomKey) -> Option<&LeaseValue> {
        self.held.get(room).map(|h| &h.value)
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn insert(&mut self, room: RoomKey, value: LeaseValue, now: Instant) {
        self.held.insert(
            room,
            Held {
                value,
                claimed_at: now,
            },
        );
    }

    /// Forgets `room`'s lease if it is still `value` (a newer claim stays).
    pub(crate) fn remove(&mut self, room: &RoomKey, value: &LeaseValue) -> bool {
        if self.held.get(room).is_some_and(|h| &h.value == value) {
            self.held.remove(room);
            return true;
        }
        false
    }

    /// Every lease, to renew.
    pub(crate) fn all(&self) -> Vec<(RoomKey, LeaseValue)> {
        self.held
            .iter()
            .map(|(k, h)| (k.clone(), h.value.clone()))
            .collect()
    }

    /// Leases of rooms not open here that were claimed more than `grace`
    /// ago: to release. The grace covers a claim whose room is still on
    /// its way into the engine (or was refused there).
    pub(crate) fn unused(
        &self,
        open: &dyn Fn(&RoomKey) -> bool,
        now: Instant,
        grace: Duration,
    ) -> Vec<(RoomKey, LeaseValue)> {
        self.held
            .iter()
            .filter(|(k, h)| !open(k) && now.saturating_duration_since(h.claimed_at) >= grace)
            .map(|(k, h)| (k.clone(), h.value.clone()))
            .collect()
    }
}

/// The host and port of an advertised address (`http://10.0.0.5:8080`,
/// `rtmp://[::1]:1935`, `http://edge-1` with the scheme's port).
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        "rtmp" => 1935,
        "rtmps" => 443,
        _ => return None,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default),
        }
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomId;
    use proptest::prelude::*;

    #[test]
    fn advertised_addresses_give_their_host_and_port() {
        let cases = [
            ("http://10.0.0.5:8080", Some(("10.0.0.5", 8080))),
            ("rtmp://[::1]:1935", Some(("::1", 1935))),
            ("rtmp://[::1]", Some(("::1", 1935))),
            ("http://edge-1/", Some(("edge-1", 80))),
            ("https://edge-1.example", Some(("edge-1.example", 443))),
            ("http://u:p@h:81/x", Some(("h", 81))),
            ("http://h:port", None),
            ("ftp://h", None),
            ("h:80", None),
            ("http://", None),
        ];
        for (url, want) in cases {
            let got = host_port(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
    }

    fn key(n: u32) -> RoomKey {
        RoomKey {
            app: 1400000001,
            room: RoomId::Num(n),
        }
    }

    fn node(name: &str, budget: f64, used: f64, rooms: u64) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            http: format!("http://{name}"),
            rtmp: format!("rtmp://{name}"),
            rooms,
            tasks: 0,
            budget,
            budget_in_use: used,
            at_ms: 0,
        }
    }

    #[test]
    fn a_value_reads_back_and_garbage_does_not() {
        let v = LeaseValue {
            node: "edge-1:8080".into(),
            token: 42,
        };
        assert_eq!(LeaseValue::parse(&v.encode()), Some(v));
        for bad in ["", "edge-1", "edge-1 x", " 4", "a b 4", "edge-1 -1"] {
            assert_eq!(LeaseValue::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_held_room_is_taken_over_only_from_a_dead_node_or_an_earlier_life() {
        let other = LeaseValue {
            node: "b".into(),
            token: 7,
        };
        let mine = LeaseValue {
            node: "a".into(),
            token: 3,
        };
        assert_eq!(
            when_held(Some(&other), "a", true),
            WhenHeld::Elsewhere("b".into())
        );
        assert_eq!(when_held(Some(&other), "a", false), WhenHeld::TakeOver);
        assert_eq!(when_held(Some(&mine), "a", true), WhenHeld::TakeOver);
        assert_eq!(when_held(None, "a", true), WhenHeld::TakeOver);
    }

    #[test]
    fn a_room_stays_where_it_arrives_while_that_node_has_budget() {
        let me = node("a", 1.7, 0.5, 9);
        let others = [node("b", 1.7, 0.0, 0)];
        assert_eq!(place(&me, &others), Placement::Here);
        let full = node("a", 1.7, 1.7, 9);
        let others = [
            node("b", 1.7, 1.0, 0),
            node("c", 1.7, 0.2, 5),
            node("d", 1.7, 0.2, 3),
            node("e", 1.7, 1.8, 0),
        ];
        assert_eq!(place(&full, &others), Placement::There(others[2].clone()));
        assert_eq!(place(&full, &others[3..]), Placement::Nowhere);
        assert_eq!(place(&full, &[]), Placement::Nowhere);
    }

    #[test]
    fn unused_leases_wait_out_their_grace_and_a_newer_claim_survives_an_old_release() {
        let t0 = Instant::now();
        let mut leases = Leases::default();
        let v1 = LeaseValue {
            node: "a".into(),
            token: 1,
        };
        leases.insert(key(1), v1.clone(), t0);
        let grace = Duration::from_secs(5);
        let closed = |_: &RoomKey| false;
        assert!(
            leases
                .unused(&closed, t0 + Duration::from_secs(4), grace)
                .is_empty()
        );
        assert_eq!(
            leases.unused(&closed, t0 + grace, grace),
            vec![(key(1), v1.clone())]
        );
        let open = |_: &RoomKey| true;
        assert!(leases.unused(&open, t0 + grace, grace).is_empty());
        // A release of token 1 after the room was claimed again (token 2) keeps token 2.
        let v2 = LeaseValue {
            node: "a".into(),
            token: 2,
        };
        leases.insert(key(1), v2.clone(), t0);
        assert!(!leases.remove(&key(1), &v1));
        assert_eq!(leases.value(&key(1)), Some(&v2));
        assert!(leases.remove(&key(1), &v2));
        assert!(!leases.holds(&key(1)));
    }

    proptest! {
        /// Any node's view of the same registry places a full node's room
        /// on the same other node, one with budget left.
        #[test]
        fn placement_is_the_same_from_every_full_node(
            loads in proptest::collection::vec((0.0f64..2.0, 0u64..20), 1..8),
        ) {
            let nodes: Vec<NodeRecord> = loads
                .iter()
                .enumerate()
                .map(|(i, (used, rooms))| node(&format!("n{i}"), 1.7, *used, *rooms))
                .collect();
            let mut picks = Vec::new();
            for i in 0..nodes.len() {
                let mut me = nodes[i].clone();
                me.budget_in_use = me.budget;
                let others: Vec<_> = nodes.iter().filter(|n| n.node != me.node).cloned().collect();
                match place(&me, &others) {
                    Placement::Here => prop_assert!(false, "a full node keeps nothing"),
                    Placement::There(n) => {
                        prop_assert!(n.budget_in_use < n.budget);
                        picks.push(Some(n.node));
                    }
                    Placement::Nowhere => {
                        prop_assert!(others.iter().all(|n| n.budget_in_use >= n.budget));
                        picks.push(None);
                    }
                }
            }
            // Nodes other than the pick itself agree.
            let best = nodes
                .iter()
                .filter(|n| n.budget_in_use < n.budget)
                .min_by(|a, b| (b.budget - b.budget_in_use)
                    .total_cmp(&(a.budget - a.budget_in_use))
                    .then(a.rooms.cmp(&b.rooms))
                    .then(a.node.cmp(&b.node)))
                .map(|n| n.node.clone());
            for (i, p) in picks.iter().enumerate() {
                if best.as_deref() != Some(nodes[i].node.as_str()) {
                    prop_assert_eq!(p, &best);
                }
            }
        }
    }
}
